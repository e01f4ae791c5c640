"""kubectl-modeldeploy: `kubectl modeldeploy get|list|history|promote|abort|pause|resume|rollback|completion`.

Read commands (`get`, alias `status`; `list`; `history`) print a view, or the objects with -o json|yaml;
`get --watch` redraws the view on every change of the object (a watch, not polling) until Ctrl-C or
--timeout. Commands that change a rollout write the annotation modeldeploy.io/command (a merge patch:
users need only `patch` on modeldeployments) and wait, up to --wait, for the operator to report in
status.lastCommand what it did with it.

Exit codes (scripts can rely on them; docs/rollouts.md has the table): 0 done (a command the operator
Applied or Ignored), 1 not found, 2 usage, 3 command not applied within --wait, 4 command rejected,
5 API server or kubeconfig error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, TextIO

import yaml

from modeldeploy_contract.commands import command_patch
from modeldeploy_contract.status import CommandAction, CommandStatus, previous_promoted
from modeldeploy_kubectl.client import ApiError, Cluster, KubeClient, NotFoundError
from modeldeploy_kubectl.render import Style, read_status, render_history, render_list, render_view

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_NOT_APPLIED = 3
EXIT_REJECTED = 4
EXIT_API = 5
EXIT_INTERRUPTED = 130

MANUAL_COMMANDS: tuple[CommandAction, ...] = ("promote", "abort", "pause", "resume", "rollback")
OUTPUTS = ("json", "yaml")
SHELLS = ("bash", "zsh", "tcsh")
DEFAULT_WAIT_SECONDS = 10.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class PluginError(Exception):
    """A failure to report with a message and a documented exit code (not a crash)."""

    code = EXIT_NOT_FOUND


class UsageError(PluginError):
    code = EXIT_USAGE


class NotAppliedError(PluginError):
    code = EXIT_NOT_APPLIED


class RejectedError(PluginError):
    code = EXIT_REJECTED


def duration(text: str) -> float:
    """Seconds from `30`, `30s`, `1m30s`, `500ms`, `2h` (kubectl's duration style; a bare number: seconds)."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        if not text or _DURATION_PART.sub("", text):
            raise argparse.ArgumentTypeError(
                f"invalid duration {text!r}: use seconds (30) or a duration (30s, 2m, 1h30m)"
            ) from None
        value = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    if value < 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be a finite number >= 0")
    return value


def revision_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid revision {text!r}: a revision number (see history)"
        ) from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"invalid revision {text!r}: revision numbers start at 1")
    return number


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 2) instead of exiting, so `run` decides what to print."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage().rstrip()}\n{self.prog}: error: {message}")


def _connection_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser and on every command, so they may come before or after the command (as in
    # kubectl); a command's copy does not reset what the top one set.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-n", "--namespace", default=default, help="namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=default, help="path to the kubeconfig file")
    parser.add_argument("--context", default=default, help="kubeconfig context to use")


def build_parser(prog: str = "kubectl modeldeploy") -> Parser:
    parser = Parser(
        prog=prog,
        description="Watch, list and steer ModelDeployment rollouts (modeldeploy.io).",
        epilog="Exit codes: 0 ok, 1 not found, 2 usage, 3 not applied within --wait, 4 rejected, "
        "5 API server or kubeconfig error, 130 interrupted.",
    )
    _connection_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, text: str, *, aliases: Sequence[str] = (), named: bool = True) -> Parser:
        sub: Parser = commands.add_parser(name, help=text, description=text, aliases=list(aliases))
        _connection_flags(sub, top=False)
        if named:
            sub.add_argument("name", metavar="NAME", help="the ModelDeployment")
        return sub

    def output(sub: Parser) -> None:
        sub.add_argument("-o", "--output", choices=OUTPUTS, help="print the object(s) as JSON or YAML")

    get = command(
        "get",
        "steps, weights, checks and their values, recent events (--watch: redraw on every change)",
        aliases=["status"],
    )
    output(get)
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every change until Ctrl-C")
    get.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help="with --watch: stop watching after this long (e.g. 10m; default: until Ctrl-C)",
    )
    listing = command(
        "list", "the ModelDeployments of a namespace (-A: of all), like kubectl get", named=False
    )
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    output(listing)
    history = command("history", "revisions with model version, uri, sha256, times and outcome")
    output(history)
    helps = {
        "promote": "skip the remaining steps (--full: all traffic as soon as the canary has a ready pod)",
        "abort": "abort the rollout in progress: all traffic back on the stable revision",
        "pause": "hold the rollout in progress at its current step",
        "resume": "go on after a pause (or a failure pause); retry an aborted rollout",
        "rollback": "serve revision N (default: the previous promoted one) until the spec changes",
    }
    for name, text in helps.items():
        sub = command(name, text)
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="switch all traffic now")
        if name == "rollback":
            sub.add_argument(
                "--to",
                type=revision_number,
                dest="revision",
                metavar="N",
                help="revision number (see history)",
            )
        sub.add_argument(
            "--wait",
            type=duration,
            default=DEFAULT_WAIT_SECONDS,
            metavar="DURATION",
            help="how long to wait for the operator to apply it; exit 3 if it has not "
            f"(default {DEFAULT_WAIT_SECONDS:g}s; 0: do not wait)",
        )
    completion = commands.add_parser(
        "completion", help="print a shell completion script", description="print a shell completion script"
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    return parser


def use_color(out: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour on a terminal only, and never with NO_COLOR set (no-color.org) or TERM=dumb."""
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def dump(value: Any, fmt: str, *, compact: bool = False) -> str:
    if fmt == "json":
        return json.dumps(value, separators=(",", ":")) if compact else json.dumps(value, indent=2)
    return str(yaml.safe_dump(value, sort_keys=False)).rstrip("\n")


def _rollback_target(body: dict[str, Any], wanted: int | None) -> int:
    """The revision number to roll back to, checked against status.history (clear errors here)."""
    status, _ = read_status(body)
    name = body["metadata"]["name"]
    if wanted is not None:
        if not any(e.revision == wanted for e in status.history):
            known = ", ".join(str(e.revision) for e in status.history) or "none"
            raise PluginError(f"revision {wanted} is not in the history of {name} (known: {known})")
        return wanted
    variant = status.rollout_variant or (
        max(status.variants, key=lambda v: v.weight).name if status.variants else "default"
    )
    serving = next((v.revision for v in status.variants if v.name == variant), None)
    entry = previous_promoted(status.history, variant, serving)
    if entry is None:
        raise RejectedError(f"{name} has no previous promoted revision to roll back to")
    return entry.revision


def _answer(body: Mapping[str, Any], command_id: str) -> CommandStatus | None:
    handled = read_status(body)[0].last_command
    return handled if handled is not None and handled.id == command_id else None


def _await_answer(
    cluster: Cluster, namespace: str, name: str, command_id: str, wait: float
) -> CommandStatus | None:
    """The operator's answer to one command, from a watch on the object, or None after `wait` seconds."""
    if wait <= 0:
        return _answer(cluster.get(namespace, name), command_id)
    for kind, body in cluster.watch(namespace, name, wait):
        if kind == "DELETED":
            raise NotFoundError(f'modeldeployment "{name}" was deleted in namespace "{namespace}"')
        answer = _answer(body, command_id)
        if answer is not None:
            return answer
    return None


def _send(cluster: Cluster, namespace: str, args: argparse.Namespace, out: TextIO) -> int:
    action: CommandAction = args.command
    body = cluster.get(namespace, args.name)
    revision = _rollback_target(body, args.revision) if action == "rollback" else None
    command_id, patch = command_patch(action, revision=revision, full=getattr(args, "full", False))
    cluster.patch(namespace, args.name, patch)
    handled = _await_answer(cluster, namespace, args.name, command_id, args.wait)
    if handled is None:
        raise NotAppliedError(
            f"{action} not applied within {args.wait:g}s: the operator has not handled command {command_id} "
            "(is it running?); the annotation stays, so it is carried out when the operator gets to it"
        )
    if handled.result == "Rejected":
        raise RejectedError(f"{action} rejected: {handled.message}")
    out.write(f"{args.name}: {action} {handled.result.lower()}: {handled.message}\n")
    return EXIT_OK


def _frames(
    first: dict[str, Any], events: Iterator[tuple[str, dict[str, Any]]], name: str, namespace: str
) -> Iterator[dict[str, Any]]:
    yield first
    for kind, body in events:
        if kind == "DELETED":
            raise NotFoundError(f'modeldeployment "{name}" was deleted in namespace "{namespace}"')
        yield body


def _watch(
    cluster: Cluster, namespace: str, args: argparse.Namespace, out: TextIO, style: Style, tty: bool
) -> int:
    """Redraw on every change that changes what is shown; JSON/YAML: one document per change."""
    first = cluster.get(namespace, args.name)
    last = None
    try:
        for body in _frames(first, cluster.watch(namespace, args.name, args.timeout), args.name, namespace):
            if args.output == "json":
                frame = dump(body, "json", compact=True)
            elif args.output == "yaml":
                frame = "---\n" + dump(body, "yaml")
            else:
                frame = render_view(body, style=style)
            if frame == last:
                continue
            out.write((CLEAR_SCREEN if tty and not args.output else "") + frame + "\n")
            if not tty and not args.output:
                out.write("\n")
            out.flush()
            last = frame
    except KeyboardInterrupt:
        pass  # Ctrl-C ends a watch: that is how it is meant to end
    return EXIT_OK


def _effectiveness(cluster: Cluster, namespace: str, body: Mapping[str, Any]) -> bytes | str | None:
    """The label joiner's summary when the ModelDeployment has one (spec.effectiveness), or why not."""
    spec = (body.get("spec") or {}).get("effectiveness")
    if not isinstance(spec, dict) or spec.get("enabled") is False:
        return None
    try:
        return cluster.effectiveness(namespace, str(body["metadata"]["name"]))
    except ApiError as error:
        return str(error)


def _read(
    cluster: Cluster, namespace: str, args: argparse.Namespace, out: TextIO, style: Style, tty: bool
) -> int:
    if args.command in ("get", "status"):
        if args.watch:
            return _watch(cluster, namespace, args, out, style, tty)
        body = cluster.get(namespace, args.name)
        text = (
            dump(body, args.output)
            if args.output
            else render_view(
                body,
                cluster.events(namespace, args.name),
                style=style,
                effectiveness=_effectiveness(cluster, namespace, body),
            )
        )
    elif args.command == "list":
        bodies = cluster.list_all(None if args.all_namespaces else namespace)
        if args.output:
            text = dump({"apiVersion": "v1", "kind": "List", "items": bodies}, args.output)
        else:
            text = render_list(bodies, all_namespaces=args.all_namespaces, style=style)
            if not text:
                where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
                text = f"No modeldeployments found in {where}."
    else:
        body = cluster.get(namespace, args.name)
        history = list((body.get("status") or {}).get("history") or [])
        text = dump(history, args.output) if args.output else render_history(body)
    out.write(text + "\n")
    return EXIT_OK


def _dispatch(
    argv: Sequence[str] | None, cluster: Cluster | None, out: TextIO, environ: Mapping[str, str]
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "timeout", None) is not None and not args.watch:
        parser.error("--timeout is only for --watch")
    if args.command == "completion":
        import shtab

        out.write(shtab.complete(build_parser("kubectl-modeldeploy"), shell=args.shell))
        return EXIT_OK
    if cluster is None:
        cluster = KubeClient(args.kubeconfig, args.context)
        namespace = args.namespace or KubeClient.default_namespace(args.kubeconfig, args.context)
    else:
        namespace = args.namespace or "default"
    tty = bool(getattr(out, "isatty", lambda: False)())
    style = Style(color=use_color(out, environ))
    if args.command in MANUAL_COMMANDS:
        return _send(cluster, namespace, args, out)
    return _read(cluster, namespace, args, out, style, tty)


def exit_code(error: BaseException) -> tuple[int, str]:
    """The documented exit code of a failure, and the message to print."""
    if isinstance(error, UsageError):
        return EXIT_USAGE, str(error)
    if isinstance(error, PluginError):
        return error.code, f"error: {error}"
    if isinstance(error, NotFoundError):
        return EXIT_NOT_FOUND, f"error: {error}"
    if isinstance(error, ApiError):
        return EXIT_API, f"error: {error}"
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    # connection refused, TLS trouble: a message, not a trace
    return EXIT_API, f"error: {type(error).__name__}: {error}"


def run(
    argv: Sequence[str] | None = None,
    *,
    cluster: Cluster | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one command; returns the exit code (messages on `err`)."""
    err = err or sys.stderr
    try:
        return _dispatch(argv, cluster, out or sys.stdout, os.environ if environ is None else environ)
    except SystemExit as exited:  # --help
        return EXIT_USAGE if isinstance(exited.code, str) else int(exited.code or 0)
    except (Exception, KeyboardInterrupt) as error:
        code, message = exit_code(error)
        err.write(message + "\n")
        return code


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))
