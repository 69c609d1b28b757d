"""The ``prefect-mlops`` command line: train, roll back, reproduce, show status, lineage and alias history.

Heavy SDKs load only inside the command that needs them, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from deployments.pipeline_ci import add_ci_parser


def _registry(args: argparse.Namespace) -> tuple:  # (MlflowServer, model name), imported lazily
    """Open the registry the command reads and resolve its model, or raise a clear :class:`CliError`."""
    from deployments.registry_check import open_registry, resolve_model

    server = open_registry(args.mlflow_block)
    return server, resolve_model(server, args.mlflow_block, args.model)


def cmd_train(args: argparse.Namespace) -> int:
    """Run continuous training ad hoc."""
    from flows.continuous_training import continuous_training

    options = {"target": args.target} if args.target else {}
    if args.dataset_path:
        options["dataset_path"] = args.dataset_path
    summary = continuous_training(data_file=args.data, model_name=args.model, mlflow_block=args.mlflow_block,
                                  **options)
    print(summary.render())
    return 0


def cmd_stop_endpoint(args: argparse.Namespace) -> int:
    """Stop a serving endpoint and every process of it (supervisor, front, backends, workers)."""
    from flows.deploy_model import load_serving
    from tasks.serving_endpoint import stop_serving

    serving = load_serving(args.serving_block)
    stopped = stop_serving(serving)["stopped"]
    print(f"{serving.endpoint_url()}: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Roll the champion back."""
    from flows.rollback_model import rollback_model

    _, model = _registry(args)
    result = rollback_model(model_name=model, reason=args.reason, to_version=args.to_version,
                            mlflow_block=args.mlflow_block)
    print(f"{result.model_name}: champion v{result.from_version} -> v{result.to_version} ({result.reason})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print the alias history of a model."""
    from tasks.mlflow_alias_history import alias_history

    server, model = _registry(args)
    moves = alias_history(server, model, args.alias)
    if not moves:
        print(f"{model}: no recorded {args.alias or 'alias'} moves", file=sys.stderr)
    for move in moves:
        print(f"{move.at}  {move.alias:<10} {move.from_version or '-':>4} -> {move.to_version or '-':<4} by {move.by}: "
              f"{move.reason}")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    """Print the lineage chain of a model version (endpoint back to data, code and the run that made it)."""
    import datetime as dt

    from deployments.lineage import model_lineage, render

    at = dt.datetime.fromisoformat(args.at) if args.at else None
    chain = model_lineage(args.ref, mlflow_block=args.mlflow_block, serving_block=args.serving_block, at=at)
    print(json.dumps(chain, indent=2, default=str) if args.json else render(chain))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Retrain a version from its recorded data and settings; exit 2 when its metrics are not reproduced."""
    from deployments.lineage import parse_ref
    from flows.reproduce_model import reproduce_model

    name, alias, version = parse_ref(args.ref)
    summary = reproduce_model(model_name=name, version=version, alias=alias or "champion", tolerance=args.tolerance,
                              mlflow_block=args.mlflow_block, dvc_block=args.dvc_block)
    print(summary.model_dump_json(indent=2) if args.json else summary.render())
    return 0 if summary.reproduced else 2


def cmd_status(args: argparse.Namespace) -> int:
    """Print the champion, its lineage and what serves now."""
    from deployments.registry_check import HINT, CliError
    from flows.deploy_model import load_serving
    from tasks.mlflow_registry import CHAMPION, alias_version
    from tasks.serving_endpoint import serving_status

    server, model = _registry(args)
    champion = alias_version(server, model, CHAMPION)
    try:
        serving_block = load_serving(args.serving_block)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported with the block's name
        raise CliError(f"cannot load the BentoMLServing block {args.serving_block!r}: {exc}. Check the name "
                       "(`prefect block ls`), or leave out --serving-block for the embedded endpoint.") from exc
    serving = serving_status(serving_block)
    serves = serving.get("state") in ("serving", "degraded") and serving.get("model_name") == model
    if champion is None and serves:
        raise CliError(f"{model} v{serving.get('model_version')} serves at {serving.get('url')}, but "
                       f"{server.registry_uri or server.tracking_uri} has no champion for it: this is not the "
                       f"registry it was deployed from; {HINT}.")
    status: dict[str, object] = {"model": model, "tracking_uri": server.tracking_uri}
    if champion is None:
        status["champion"] = None
    else:
        status["champion"] = {"version": champion.version, "run_id": champion.run_id, "since":
                              champion.tags.get("mlops.alias.champion.since"),
                              "lineage": {k: v for k, v in champion.tags.items() if k.startswith("mlops.")
                                          and not k.startswith("mlops.alias")}}
    status["serving"] = serving
    print(json.dumps(status, indent=2, default=str))
    return 0


def _definitions(args: argparse.Namespace) -> list:
    import datetime as dt

    from deployments.definitions import definitions

    params = dict(p.split("=", 1) for p in args.param or [])
    for block in ("mlflow_block", "serving_block"):
        if getattr(args, block, None):
            params.setdefault(block, getattr(args, block))
    defs = definitions(cooldown=dt.timedelta(seconds=args.cooldown_seconds),
                       monitor_every=dt.timedelta(seconds=args.monitor_every),
                       watch_every=dt.timedelta(seconds=args.watch_every), retrain_cron=args.retrain_cron,
                       parameters=params, staged_rollout=getattr(args, "staged_rollout", False))
    if args.only:
        wanted = set(args.only.split(","))
        defs = [d for d in defs if d.name in wanted or f"{d.entrypoint.split(':')[1].replace('_', '-')}/{d.name}"
                in wanted]
    return defs


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the deployments from this process."""
    from deployments.definitions import serve_all

    serve_all(_definitions(args), limit=args.limit)
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Register the deployments with a work pool."""
    from deployments.definitions import deploy_all

    for deployment_id in deploy_all(args.work_pool, _definitions(args), *_target(args)):
        print(deployment_id)
    return 0


def _target(args: argparse.Namespace) -> tuple[dict, object]:  # (job variables, CodeSource)
    from deployments.code_source import CodeSource
    from deployments.registry_check import CliError

    variables = {}
    for item in args.job_variable or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise CliError(f"--job-variable {item!r}: write NAME=VALUE, e.g. 'env={{\"A\": \"1\"}}'")
        try:
            variables[name] = json.loads(raw)
        except ValueError:
            variables[name] = raw
    return variables, CodeSource.detect(args.repo_url, args.branch)


def cmd_write_yaml(args: argparse.Namespace) -> int:
    """Write prefect.yaml from the definitions (the same deployments ``deploy`` registers for the same options)."""
    from pathlib import Path

    from deployments.definitions import write_prefect_yaml

    print(write_prefect_yaml(Path(args.output) if args.output else None, _definitions(args), args.work_pool,
                             *_target(args)))
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """Create the notification automation."""
    from deployments.automations import create_notification_automation

    automation = create_notification_automation(args.url, apprise=args.apprise)
    print(f"automation {automation.name} ({automation.id})")
    return 0


def _add_definition_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", default=None, help="comma-separated deployment names (default: all)")
    parser.add_argument("--param", action="append", help="default parameter NAME=VALUE for every deployment")
    parser.add_argument("--cooldown-seconds", type=float, default=6 * 3600, help="retrain cool-down per model")
    parser.add_argument("--monitor-every", type=float, default=3600, help="monitoring interval, seconds")
    parser.add_argument("--watch-every", type=float, default=300, help="data-watch interval, seconds")
    parser.add_argument("--retrain-cron", default="0 3 * * *", help="cron of the scheduled retrain")
    parser.add_argument("--mlflow-block", default=argparse.SUPPRESS, help="mlflow_block parameter of every flow")
    parser.add_argument("--serving-block", default=None, help="serving_block parameter of every flow")
    parser.add_argument("--staged-rollout", action="store_true", help="a promotion starts rollout-model "
                        "(staging, infra validation, approval, production) instead of deploy-model")


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    """Options of the registered deployments: pool, job variables, where workers get the code."""
    parser.add_argument("--work-pool", default="mlops")
    parser.add_argument("--job-variable", action="append", help="job variable NAME=VALUE (VALUE: JSON or text)")
    parser.add_argument("--repo-url", default=None, help="git repository workers clone (default: origin's URL; "
                                                         "'': no clone, this checkout's folder)")
    parser.add_argument("--branch", default=None, help="branch workers clone (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    from deployments.approval_cli import add_parser as add_approval_parsers
    parser = argparse.ArgumentParser(prog="prefect-mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--mlflow-block", default=None, help="saved MlflowServer block (default: embedded)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run the continuous-training flow once")
    train.add_argument("--data", default=None, help="CSV/Parquet file to version and train on")
    train.add_argument("--model", default="churn-classifier")
    train.add_argument("--target", default=None, help="target column (default: churned, the sample data's)")
    train.add_argument("--dataset-path", default=None, help="path of the dataset in the data repo "
                                                            "(default: data/train.parquet)")
    train.set_defaults(func=cmd_train)
    rollback = sub.add_parser("rollback", help="make the previous champion serve again")
    rollback.add_argument("--model", default=None, help="registered model (default: the only one registered)")
    rollback.add_argument("--reason", default="manual rollback")
    rollback.add_argument("--to-version", default=None)
    rollback.set_defaults(func=cmd_rollback)
    history = sub.add_parser("history", help="list recorded alias moves")
    history.add_argument("--model", default=None, help="registered model (default: the only one registered)")
    history.add_argument("--alias", default=None)
    history.set_defaults(func=cmd_history)
    status = sub.add_parser("status", help="champion, lineage and serving endpoint")
    status.add_argument("--model", default=None, help="registered model (default: the only one registered)")
    status.add_argument("--serving-block", default=None, help="saved BentoMLServing block (default: embedded)")
    status.set_defaults(func=cmd_status)
    lineage = sub.add_parser("lineage", help="endpoint -> bento -> version -> run -> data -> code -> flow run")
    lineage.add_argument("ref", help="MODEL (its champion), MODEL@ALIAS or MODEL:VERSION")
    lineage.add_argument("--at", default=None, help="ISO time: the version the alias named then")
    lineage.add_argument("--json", action="store_true", help="print JSON")
    lineage.add_argument("--serving-block", default=None, help="saved BentoMLServing block (default: embedded)")
    lineage.set_defaults(func=cmd_lineage)
    reproduce = sub.add_parser("reproduce", help="retrain a version from its recorded data rev and settings "
                                                 "(exit 2 when its metrics are not reproduced)")
    reproduce.add_argument("ref", help="MODEL (its champion), MODEL@ALIAS or MODEL:VERSION")
    reproduce.add_argument("--tolerance", type=float, default=0.02, help="relative metric tolerance (0.02 = 2%%)")
    reproduce.add_argument("--dvc-block", default=None, help="saved DvcRepository block (default: embedded)")
    reproduce.add_argument("--json", action="store_true", help="print JSON")
    reproduce.set_defaults(func=cmd_reproduce)
    stop = sub.add_parser("stop-endpoint", help="stop a serving endpoint and all of its processes")
    stop.add_argument("--serving-block", default=None, help="saved BentoMLServing block (default: embedded)")
    stop.set_defaults(func=cmd_stop_endpoint)
    from deployments.pipeline_spec_cli import add_parser as add_spec_parser
    add_spec_parser(sub)
    serve = sub.add_parser("serve", help="serve every deployment from this process (no work pool)")
    _add_definition_options(serve)
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    serve.set_defaults(func=cmd_serve)
    deploy = sub.add_parser("deploy", help="register every deployment with a work pool")
    _add_definition_options(deploy)
    _add_target_options(deploy)
    deploy.set_defaults(func=cmd_deploy)
    write_yaml = sub.add_parser("write-yaml", help="write prefect.yaml from deployments/definitions.py")
    _add_definition_options(write_yaml)
    _add_target_options(write_yaml)
    write_yaml.add_argument("--output", default=None, help="file to write (default: the project's prefect.yaml)")
    write_yaml.set_defaults(func=cmd_write_yaml)
    add_ci_parser(sub, _add_definition_options, _add_target_options)
    notify = sub.add_parser("notify", help="notify a webhook / Apprise URL on failures and rejections")
    notify.add_argument("url")
    notify.add_argument("--apprise", action="store_true")
    notify.set_defaults(func=cmd_notify)
    add_approval_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prefect-mlops`` console script: exit 1 with a one-line reason on a known error."""
    from tasks.exceptions import MlopsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MlopsError as exc:
        print(f"prefect-mlops {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
