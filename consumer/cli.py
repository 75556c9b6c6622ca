"""``keyblend``: a thin command line over the library. Commands parse, call, and format.

Heavy modules (torch, sentence-transformers, onnxruntime) are imported inside the
command that needs them, so ``keyblend --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumer.settings import Settings

HYPD = Path("../shared/data/hypd")


def _settings(args: argparse.Namespace) -> Settings:
    """Env vars / .env first, then any flag given on the command line."""
    overrides: dict[str, Any] = {}
    for name in (
        "brokers",
        "group",
        "model_dir",
        "catalog_path",
        "batch_size",
        "top_k",
        "metrics_port",
        "threads",
        "delivery",
        "models_root",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _add_broker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--brokers", help="bootstrap servers (env KEYBLEND_BROKERS)")
    p.add_argument("--group", help="consumer group (env KEYBLEND_GROUP)")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="model_dir", type=Path, help="model folder (default: base model)")
    p.add_argument("--catalog", dest="catalog_path", type=Path, help="catalog file (default: demo)")


def cmd_worker(args: argparse.Namespace) -> int:
    from consumer.worker import run_worker

    return run_worker(_settings(args))


def cmd_publish_demo(args: argparse.Namespace) -> int:
    from consumer.demo import publish_demo

    count = publish_demo(_settings(args), limit=args.count, malformed=args.malformed)
    print(f"published {count} demo pebble events")
    return 0


def cmd_run_demo(args: argparse.Namespace) -> int:
    from consumer.demo import run_demo

    return run_demo(_settings(args), count=args.count)


def cmd_demo_data(args: argparse.Namespace) -> int:
    from consumer.demo import write_demo_files

    for path in write_demo_files(args.out):
        print(path)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from consumer.worker import load_engine

    settings = _settings(args)
    engine = load_engine(settings)
    for rec in engine.suggest(" ".join(args.text), k=args.k or settings.top_k):
        print(rec)
    return 0


def cmd_catalog_check(args: argparse.Namespace) -> int:
    from consumer.catalog import read_products

    products, report = read_products(args.path)
    print(report.summary())
    published = sum(p.is_published for p in products)
    print(f"{published} published, {len(products) - published} not published")
    return 1 if report.rejected and args.strict else 0


def cmd_export_base(args: argparse.Namespace) -> int:
    from consumer.models import ensure_base_model

    print(ensure_base_model(_settings(args).models_root))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from model_export.train import TrainOptions, train

    options = TrainOptions(
        epochs=args.epochs,
        seed=args.seed,
        validation=args.validation,
        max_minutes=args.max_minutes,
        fine_tune=not args.no_fine_tune and args.encoder is None,
        resume=args.resume,
        batch_size=args.batch_size,
        encoder_dir=args.encoder,
        threads=args.threads,
    )
    out = train(args.products, args.posts, args.tags, args.out, options)
    print(out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model_export.evaluation import format_table
    from model_export.pipeline import run_evaluation

    report = run_evaluation(
        model=args.model,
        products=args.products,
        posts=args.posts,
        tags=args.tags,
        seed=args.seed,
        validation=args.validation,
        with_baselines=not args.no_baselines,
        html=args.report,
        threads=args.threads or 1,
    )
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_table(report))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from model_export.benchmark import run_benchmark

    return run_benchmark(args.out, quick=args.quick, sizes=args.sizes, model=args.bench_model,
                         sections=args.sections)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from consumer.worker import replay_dead_letters

    replayed = replay_dead_letters(
        _settings(args), limit=args.limit, error_types=args.only, dry_run=args.dry_run
    )
    print(f"re-submitted {replayed} dead-lettered events")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyblend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("worker", help="consume pebble events, publish product suggestions")
    _add_broker_flags(p)
    _add_model_flags(p)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--delivery", choices=["exactly-once", "at-least-once"])
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("publish-demo", help="publish the demo pebble events")
    _add_broker_flags(p)
    p.add_argument("--count", type=int, default=None, help="how many (default: all)")
    p.add_argument("--malformed", type=int, default=0, help="also publish N malformed events")
    p.set_defaults(func=cmd_publish_demo)

    p = sub.add_parser("run-demo", help="local broker + worker + demo pebbles, print suggestions")
    _add_model_flags(p)
    p.add_argument("--count", type=int, default=8)
    p.set_defaults(func=cmd_run_demo)

    p = sub.add_parser("demo-data", help="write the demo catalog, posts and tags files")
    p.add_argument("out", type=Path)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("suggest", help="suggest products for a text, no broker")
    _add_model_flags(p)
    p.add_argument("text", nargs="+")
    p.add_argument("-k", type=int)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("catalog-check", help="validate a catalog file and report rejects")
    p.add_argument("path", type=Path)
    p.add_argument("--strict", action="store_true", help="exit 1 if any record is rejected")
    p.set_defaults(func=cmd_catalog_check)

    p = sub.add_parser("export-base", help="export the base model to ONNX under models/")
    p.set_defaults(func=cmd_export_base)

    p = sub.add_parser("train", help="learn from tagged history; write a model folder")
    p.add_argument("--products", type=Path, default=HYPD / "product_list.csv")
    p.add_argument("--posts", type=Path, default=HYPD / "content_list.csv")
    p.add_argument("--tags", type=Path, default=HYPD / "product_content_list.csv")
    p.add_argument("--out", type=Path, default=None, help="default: models/<version>")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation", type=float, default=0.2)
    p.add_argument("--max-minutes", type=float, default=18.0, help="fine-tuning wall-clock budget")
    p.add_argument("--no-fine-tune", action="store_true", help="keep the base encoder")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--encoder", type=Path, default=None,
                   help="use this ONNX encoder folder (e.g. models/hypd/encoder) instead of fine-tuning")
    p.add_argument("--threads", type=int, default=None, help="torch threads for fine-tuning (default: all)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="rank the catalog for held-out posts; metrics + baselines")
    p.add_argument("--model", type=Path, default=None, help="model folder (default: untrained)")
    p.add_argument("--products", type=Path, default=HYPD / "product_list.csv")
    p.add_argument("--posts", type=Path, default=HYPD / "content_list.csv")
    p.add_argument("--tags", type=Path, default=HYPD / "product_content_list.csv")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--report", type=Path, default=None, help="write an HTML report here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="throughput, latency and scaling benchmark (minutes)")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--model", dest="bench_model", type=Path, default=None,
                   help="model folder (default: models/hypd if trained, else the base model)")
    p.add_argument("--sections", nargs="*", default=None,
                   choices=["inprocess", "broker", "recipe", "encoding", "scaling", "million"],
                   help="run only these sections (default: all)")
    p.set_defaults(func=cmd_bench)

    dlq = sub.add_parser("dlq", help="dead-letter topic tools").add_subparsers(dest="dlq", required=True)
    p = dlq.add_parser("replay", help="re-submit dead-lettered events to the input topic")
    _add_broker_flags(p)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--only", nargs="*", default=None, help="error types to replay")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_dlq_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
