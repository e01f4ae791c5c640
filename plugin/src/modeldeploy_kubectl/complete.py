"""kubectl_complete-modeldeploy: completions of `kubectl modeldeploy ...` typed after `kubectl`.

kubectl (1.26+) completes a plugin's arguments by running `kubectl_complete-<plugin>` from PATH with
the words typed after the plugin's name, the last one being the word to complete ("" for a new word),
and reads one candidate a line, then an optional `:<directive>` line (Cobra's ShellCompDirective;
4 = no file completion). Commands, flags, -o values, shells, and the names of ModelDeployments (read
from the cluster, best effort) are completed from the same argparse parser that runs the commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from modeldeploy_kubectl.main import OUTPUTS, SHELLS, build_parser

NO_FILE_COMPLETION = 4
NameLister = Callable[[str | None, str | None, str | None], list[str]]
"""(namespace, kubeconfig, context) -> ModelDeployment names."""


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--") or len(o) == 2]


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> bool:
    for action in parser._actions:
        if flag in action.option_strings:
            return action.nargs != 0
    return False


def _cluster_names(namespace: str | None, kubeconfig: str | None, context: str | None) -> list[str]:
    try:
        from modeldeploy_kubectl.client import KubeClient

        client = KubeClient(kubeconfig, context)
        where = namespace or KubeClient.default_namespace(kubeconfig, context)
        return sorted(str(b["metadata"]["name"]) for b in client.list_all(where))
    except Exception:  # completion must never fail loudly: no cluster, no names
        return []


@dataclass
class _Line:
    """What the words typed so far say: the command, its parser, its positionals, flag values."""

    command: str | None
    parser: argparse.ArgumentParser
    positionals: list[str] = field(default_factory=list)
    given: dict[str, str] = field(default_factory=dict)


def _read_line(parser: argparse.ArgumentParser, done: Sequence[str]) -> _Line:
    commands = _subparsers(parser)
    line = _Line(None, parser)
    skip = False
    for index, token in enumerate(done):
        if skip:
            skip = False
        elif token.startswith("-"):
            flag = token.split("=", 1)[0]
            if "=" not in token and _takes_value(line.parser, flag):
                skip = True
                if index + 1 < len(done):
                    line.given[flag] = done[index + 1]
        elif line.command is None and token in commands:
            line.command, line.parser = token, commands[token]
        else:
            line.positionals.append(token)
    return line


def _candidates(line: _Line, previous: str, word: str, names: NameLister) -> list[str]:
    if previous.startswith("-") and "=" not in previous and _takes_value(line.parser, previous):
        return list(OUTPUTS) if previous in ("-o", "--output") else []
    if word.startswith("-"):
        return _flags(line.parser)
    if line.command is None:
        return list(_subparsers(build_parser()))
    if line.command == "completion":
        return [] if line.positionals else list(SHELLS)
    if line.command == "list" or line.positionals:
        return []
    namespace = line.given.get("-n") or line.given.get("--namespace")
    return names(namespace, line.given.get("--kubeconfig"), line.given.get("--context"))


def complete(words: Sequence[str], names: NameLister = _cluster_names) -> list[str]:
    """Candidates for the last of `words` (the words after `kubectl modeldeploy`)."""
    *done, word = list(words) or [""]
    line = _read_line(build_parser(), done)
    previous = done[-1] if done else ""
    return sorted(c for c in _candidates(line, previous, word, names) if c.startswith(word))


def main(argv: Sequence[str] | None = None) -> None:
    words = list(sys.argv[1:] if argv is None else argv)
    for candidate in complete(words):
        print(candidate)
    print(f":{NO_FILE_COMPLETION}")
