"""The ``prefect-mlops`` command line: train, roll back, show status and alias history.

Heavy SDKs load only inside the command that needs them, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _mlflow(name: str | None):  # noqa: ANN202 - returns MlflowServer, imported lazily
    from flows.common import load_mlflow

    return load_mlflow(name)


def cmd_train(args: argparse.Namespace) -> int:
    """Run continuous training ad hoc."""
    from flows.continuous_training import continuous_training

    summary = continuous_training(data_file=args.data, model_name=args.model, mlflow_block=args.mlflow_block)
    print(summary.render())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll the champion back."""
    from flows.rollback_model import rollback_model

    result = rollback_model(model_name=args.model, reason=args.reason, to_version=args.to_version,
                            mlflow_block=args.mlflow_block)
    print(f"{result.model_name}: champion v{result.from_version} -> v{result.to_version} ({result.reason})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print the alias history of a model."""
    from tasks.mlflow_registry import alias_history

    for move in alias_history(_mlflow(args.mlflow_block), args.model, args.alias):
        print(f"{move.at}  {move.alias:<10} {move.from_version or '-':>4} -> {move.to_version:<4} by {move.by}: "
              f"{move.reason}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the champion, its lineage and what serves now."""
    from tasks.mlflow_registry import CHAMPION, alias_version

    server = _mlflow(args.mlflow_block)
    champion = alias_version(server, args.model, CHAMPION)
    status: dict[str, object] = {"model": args.model, "tracking_uri": server.tracking_uri}
    if champion is None:
        status["champion"] = None
    else:
        status["champion"] = {"version": champion.version, "run_id": champion.run_id, "since":
                              champion.tags.get("mlops.alias.champion.since"),
                              "lineage": {k: v for k, v in champion.tags.items() if k.startswith("mlops.")
                                          and not k.startswith("mlops.alias")}}
    try:
        from tasks.bentoml_serving import serving_status
    except ImportError:
        serving_status = None
    if serving_status is not None:
        status["serving"] = serving_status(None)
    print(json.dumps(status, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="prefect-mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow-block", default=None, help="saved MlflowServer block (default: embedded)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run the continuous-training flow once")
    train.add_argument("--data", default=None, help="CSV/Parquet file to version and train on")
    train.add_argument("--model", default="churn-classifier")
    train.set_defaults(func=cmd_train)
    rollback = sub.add_parser("rollback", help="make the previous champion serve again")
    rollback.add_argument("--model", default="churn-classifier")
    rollback.add_argument("--reason", default="manual rollback")
    rollback.add_argument("--to-version", default=None)
    rollback.set_defaults(func=cmd_rollback)
    history = sub.add_parser("history", help="list recorded alias moves")
    history.add_argument("--model", default="churn-classifier")
    history.add_argument("--alias", default=None)
    history.set_defaults(func=cmd_history)
    status = sub.add_parser("status", help="champion, lineage and serving endpoint")
    status.add_argument("--model", default="churn-classifier")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prefect-mlops`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
