# Common verbs. Every target creates the virtual environment first, so on a fresh
# machine `make run` and `make test` are the only two commands needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test test-all lint format bench soak train evaluate schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch first: any other version pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,broker,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install  ## local broker, worker on the demo catalog, demo pebbles in, suggestions printed
	$(PY) -m consumer.cli run-demo

test: install  ## the default suite (real broker, real model where marked), well under 10 minutes
	$(PY) -m pytest -q -m "not soak"

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

schemas: install  ## regenerate schemas/json from the pydantic models
	$(PY) -m schemas.generate

train: install  ## fine-tune and fit the blend on the shared HYPD data (< 30 min on 2 cores)
	$(PY) -m consumer.cli train --out models/hypd

evaluate: install  ## metrics and baselines on the validation split, HTML report
	$(PY) -m consumer.cli evaluate --model models/hypd --report reports/evaluation.html

bench: install  ## throughput, latency, scaling: writes bench-results/bench.{json,md}
	$(PY) -m consumer.cli bench --out bench-results

soak: install  ## the long fault tests (kill -9, rebalances, outages, model swaps)
	$(PY) -m pytest -q -m soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
