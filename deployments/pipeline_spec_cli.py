"""``prefect-mlops spec ...``: validate, export, deploy and serve declarative pipeline specs.

Wired into :func:`deployments.cli.build_parser` by one :func:`add_parser` call; everything heavy
is imported inside the command that needs it, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate spec files: exit 1 listing every error (file, line, field) of every file."""
    from deployments.pipeline_spec_deploy import to_definitions
    from deployments.pipeline_spec_yaml import PipelineSpecError, load_spec

    issues = []
    for file in args.files:
        try:
            spec = load_spec(file)
        except PipelineSpecError as exc:
            issues += exc.issues
            continue
        print(f"{file}: ok, {len(to_definitions(spec))} deployments")
    if issues:
        raise PipelineSpecError(issues)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the spec, or write it to ``--out``."""
    from deployments.pipeline_spec_yaml import schema_text, write_schema

    if args.out:
        print(write_schema(args.out))
    else:
        print(schema_text(), end="")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the deployment definitions (or a server's deployments) out as a spec."""
    from deployments.pipeline_spec_deploy import from_definitions
    from deployments.pipeline_spec_yaml import SCHEMA_PATH, dump_spec

    if args.from_server:
        from deployments.pipeline_spec_server import spec_from_server

        spec = spec_from_server(name=args.name, work_pool=args.work_pool)
    else:
        from deployments.definitions import definitions

        spec = from_definitions(definitions(parameters=dict(p.split("=", 1) for p in args.param or [])),
                                name=args.name)
    schema = args.schema or (_relative(SCHEMA_PATH, Path(args.out).resolve().parent) if args.out else
                             str(SCHEMA_PATH))
    text = dump_spec(spec, schema=schema)
    if args.out:
        Path(args.out).write_text(text)
        print(args.out)
    else:
        print(text, end="")
    return 0


def _relative(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Save the spec's inline blocks and register its deployments with a work pool."""
    from deployments.pipeline_spec_deploy import deploy_spec
    from deployments.pipeline_spec_yaml import load_spec
    from deployments.registry_check import CliError

    spec = load_spec(args.file)
    pool = args.work_pool or spec.work_pool
    if not pool:
        raise CliError(f"{args.file} names no work_pool: give --work-pool")
    for deployment_id in deploy_spec(spec, pool):
        print(deployment_id)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Save the spec's inline blocks and serve its deployments from this process."""
    from deployments.definitions import serve_all
    from deployments.pipeline_spec_deploy import blocks_to_save, to_definitions
    from deployments.pipeline_spec_yaml import load_spec

    spec = load_spec(args.file)
    for name, block in blocks_to_save(spec).items():
        block.save(name, overwrite=True)
    serve_all(to_definitions(spec), limit=args.limit)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``spec validate | schema | export | deploy | serve`` to the ``prefect-mlops`` subcommands.

    Args:
        sub: The subparsers of ``prefect-mlops``.

    Returns:
        The ``spec`` parser.

    Examples:
        >>> parser = argparse.ArgumentParser(prog="prefect-mlops")
        >>> _ = add_parser(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["spec", "validate", "a.yaml"]).func.__name__
        'cmd_validate'
    """
    spec = sub.add_parser("spec", help="declarative pipelines: validate, export, deploy a mlops-pipeline.yaml")
    commands = spec.add_subparsers(dest="spec_command", required=True)
    validate = commands.add_parser("validate", help="validate spec files (every error with file, line, field)")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_validate)
    schema = commands.add_parser("schema", help="print or write the spec's JSON Schema")
    schema.add_argument("--out", default=None, help="write it here (e.g. deployments/pipeline.schema.json)")
    schema.set_defaults(func=cmd_schema)
    export = commands.add_parser("export", help="write the deployment definitions (or a server's) as a spec")
    export.add_argument("--out", default=None, help="write it here (default: print)")
    export.add_argument("--name", default="prefect-mlops", help="the pipeline's name")
    export.add_argument("--param", action="append", help="default parameter NAME=VALUE for every deployment")
    export.add_argument("--from-server", action="store_true", help="read the deployments of the current "
                                                                   "Prefect server (PREFECT_API_URL)")
    export.add_argument("--work-pool", default=None, help="with --from-server: only this pool's deployments")
    export.add_argument("--schema", default=None, help="schema path or URL of the editor line (default: the "
                                                       "committed schema, relative to --out)")
    export.set_defaults(func=cmd_export)
    deploy = commands.add_parser("deploy", help="save the spec's blocks, register its deployments with a pool")
    deploy.add_argument("file", metavar="FILE")
    deploy.add_argument("--work-pool", default=None, help="work pool (default: the spec's work_pool)")
    deploy.set_defaults(func=cmd_deploy)
    serve = commands.add_parser("serve", help="save the spec's blocks, serve its deployments from this process")
    serve.add_argument("file", metavar="FILE")
    serve.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    serve.set_defaults(func=cmd_serve)
    return spec
