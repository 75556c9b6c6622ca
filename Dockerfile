# The KeyBlend worker. Serving needs no torch: the encoder runs on ONNX Runtime, and the
# model folder (built by `keyblend export-base` / `keyblend train`) is mounted at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # One ONNX Runtime thread per worker: scale with more containers, not threads
    # (two CPU-hungry processes sharing cores collapse each other's speed).
    OMP_NUM_THREADS=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HUB_OFFLINE=1

WORKDIR /app
# .dockerignore keeps the venv, models, caches and tests out of the build context,
# so this copies little more than pyproject.toml, README.md and the packages.
COPY . .
RUN pip install . && rm -rf build *.egg-info

# Unprivileged; the only writable place it needs is the encoding cache.
RUN useradd --create-home --uid 10001 keyblend && mkdir -p /var/cache/keyblend \
    && chown keyblend /var/cache/keyblend
USER keyblend

ENV KEYBLEND_METRICS_PORT=9108 \
    KEYBLEND_MODELS_ROOT=/app/models \
    KEYBLEND_CACHE_DIR=/var/cache/keyblend
EXPOSE 9108

# Liveness only (/healthz); readiness (/readyz, keyblend_ready) is alerted on instead,
# since a broker outage makes every worker unready at once and restarts would not help.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('KEYBLEND_METRICS_PORT', '9108') + '/healthz', timeout=2)"]

# SIGTERM: the worker finishes its batch, commits and leaves the group.
STOPSIGNAL SIGTERM
CMD ["keyblend", "worker"]
