"""``prefect-mlops approve | reject | approvals``: answer and list the rollouts paused for a human decision.

Wired into ``deployments/cli.py`` by one call of :func:`add_parser`. The work is in
``tasks/prefect_approval.py`` (:func:`~tasks.prefect_approval.answer_approval`,
:func:`~tasks.prefect_approval.list_pending_approvals`); this module only parses and prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def cmd_answer(args: argparse.Namespace) -> int:
    """Approve or reject the model version a paused flow run waits on."""
    from tasks.prefect_approval import answer_approval

    answer_approval(args.flow_run_id, approve=args.approve, reviewer=args.reviewer, reason=args.reason)
    print(f"flow run {args.flow_run_id}: {'approved' if args.approve else 'rejected'} by {args.reviewer}: "
          f"{args.reason}")
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    """List the flow runs paused awaiting approval."""
    from tasks.prefect_approval import list_pending_approvals

    pending = list_pending_approvals()
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in pending], indent=2))
        return 0
    if not pending:
        print("no flow run is awaiting approval")
    for p in pending:
        expires = p.expires_at.isoformat(timespec="seconds") if p.expires_at else "-"
        print(f"{p.flow_run_id}  {p.model_name} v{p.version}  ({p.flow_run_name}; default {p.default} at {expires})")
    return 0


def add_parser(sub: Any) -> None:
    """Add the ``approve``, ``reject`` and ``approvals`` commands to the CLI's subparsers.

    Args:
        sub: The ``add_subparsers()`` object of ``prefect-mlops``.

    Examples:
        >>> parser = argparse.ArgumentParser(prog="prefect-mlops")
        >>> add_parser(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["reject", "run-id", "--reviewer", "bob", "--reason", "p99"]).approve
        False
    """
    for verb, approve in (("approve", True), ("reject", False)):
        answer = sub.add_parser(verb, help=f"{verb} the model version a flow run is paused on (human approval)")
        answer.add_argument("flow_run_id", help="the paused flow run (`prefect-mlops approvals` lists them)")
        answer.add_argument("--reviewer", required=True, help="who decides (recorded on the model version)")
        answer.add_argument("--reason", required=True, help="why (recorded on the model version and in the event)")
        answer.set_defaults(func=cmd_answer, approve=approve)
    approvals = sub.add_parser("approvals", help="list the flow runs paused awaiting approval")
    approvals.add_argument("--json", action="store_true", help="print JSON")
    approvals.set_defaults(func=cmd_approvals)
