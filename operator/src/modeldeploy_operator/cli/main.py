"""kubectl-modeldeploy: `kubectl modeldeploy status|history|promote|abort|pause|resume|rollback NAME`.

Commands that change a rollout write the annotation modeldeploy.io/command (a merge patch: users need
only `patch` on modeldeployments) and wait a little for the operator to report, in
status.lastCommand, what it did with it. Exit code 1 with a message on any error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from modeldeploy_operator.cli.client import Cluster, KubeClient, NotFoundError
from modeldeploy_operator.cli.render import render_history, render_status
from modeldeploy_operator.domain.rollout.commands import command_patch
from modeldeploy_operator.domain.rollout.history import previous_promoted
from modeldeploy_operator.domain.status_model import CommandAction, ModelDeploymentStatus

POLL_SECONDS = 0.5


class CommandError(RuntimeError):
    """A problem to report to the user (exit code 1), not a crash."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl modeldeploy",
        description="Status, history and manual control of ModelDeployment rollouts.",
    )
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--kubeconfig", help="path to the kubeconfig file")
    parser.add_argument("--context", help="kubeconfig context to use")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {
        "status": "steps, weights, checks and their latest values, recent events",
        "history": "revisions with model version, uri, sha256, times and outcome",
        "promote": "skip the remaining steps (--full: all traffic as soon as the canary has a ready pod)",
        "abort": "abort the rollout in progress: all traffic back on the stable revision",
        "pause": "hold the rollout in progress at its current step",
        "resume": "go on after a pause (or a failure pause); retry an aborted rollout",
        "rollback": "serve revision N (default: the previous promoted one) until the spec changes",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("name", metavar="NAME", help="the ModelDeployment")
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="switch all traffic now")
        if name == "rollback":
            sub.add_argument(
                "--to", type=int, dest="revision", metavar="N", help="revision number (see history)"
            )
        if name in ("promote", "abort", "pause", "resume", "rollback"):
            sub.add_argument(
                "--wait", type=float, default=10.0, metavar="SECONDS", help="wait for the operator's answer"
            )
    return parser


def _status(body: dict[str, Any]) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    )


def _rollback_target(body: dict[str, Any], wanted: int | None) -> int:
    """The revision number to roll back to, checked against status.history (clear errors here)."""
    status = _status(body)
    if wanted is not None:
        if not any(e.revision == wanted for e in status.history):
            known = ", ".join(str(e.revision) for e in status.history) or "none"
            raise CommandError(
                f"revision {wanted} is not in the history of {body['metadata']['name']} (known: {known})"
            )
        return wanted
    variant = status.rollout_variant or (
        max(status.variants, key=lambda v: v.weight).name if status.variants else "default"
    )
    serving = next((v.revision for v in status.variants if v.name == variant), None)
    entry = previous_promoted(status.history, variant, serving)
    if entry is None:
        raise CommandError(f"{body['metadata']['name']} has no previous promoted revision to roll back to")
    return entry.revision


def _send(
    cluster: Cluster,
    namespace: str,
    name: str,
    action: CommandAction,
    args: argparse.Namespace,
    out: TextIO,
    sleep: Callable[[float], None],
) -> int:
    body = cluster.get(namespace, name)
    revision = _rollback_target(body, args.revision) if action == "rollback" else None
    command_id, patch = command_patch(action, revision=revision, full=getattr(args, "full", False))
    cluster.patch(namespace, name, patch)
    deadline = time.monotonic() + args.wait
    while True:
        handled = _status(cluster.get(namespace, name)).last_command
        if handled is not None and handled.id == command_id:
            if handled.result == "Rejected":
                raise CommandError(f"{action} rejected: {handled.message}")
            out.write(f"{name}: {action} {handled.result.lower()}: {handled.message}\n")
            return 0
        if time.monotonic() >= deadline:
            out.write(
                f"{name}: {action} requested (command {command_id}); the operator has not answered yet\n"
            )
            return 0
        sleep(POLL_SECONDS)


def run(
    argv: Sequence[str] | None = None,
    *,
    cluster: Cluster | None = None,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    args = _parser().parse_args(argv)
    if cluster is None:
        cluster = KubeClient(args.kubeconfig, args.context)
    namespace = args.namespace or (
        KubeClient.default_namespace(args.kubeconfig, args.context)
        if isinstance(cluster, KubeClient)
        else "default"
    )
    if args.command == "status":
        body = cluster.get(namespace, args.name)
        out.write(render_status(body, cluster.events(namespace, args.name)) + "\n")
        return 0
    if args.command == "history":
        out.write(render_history(cluster.get(namespace, args.name)) + "\n")
        return 0
    return _send(cluster, namespace, args.name, args.command, args, out, sleep)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except (NotFoundError, CommandError) as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except Exception as error:  # API errors, kubeconfig trouble: a message, not a trace
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    sys.exit(code)
