"""Shell completion: shtab scripts for `kubectl-modeldeploy`, and kubectl's plugin completion protocol
(`kubectl_complete-modeldeploy`) for `kubectl modeldeploy ...`."""

from __future__ import annotations

import io

import pytest

from modeldeploy_kubectl import complete as kubectl_complete
from modeldeploy_kubectl.main import EXIT_OK, run

from plugin_fakes import FakeCluster


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_completion_scripts_name_every_command(shell: str) -> None:
    out = io.StringIO()
    assert run(["completion", shell], cluster=FakeCluster(), out=out) == EXIT_OK
    script = out.getvalue()
    assert "kubectl-modeldeploy" in script
    for command in ("get", "list", "history", "promote", "abort", "pause", "resume", "rollback"):
        assert command in script


def names(namespace: str | None, kubeconfig: str | None, context: str | None) -> list[str]:
    return {"ml": ["churn", "churn-v2", "fraud"]}.get(namespace or "default", ["default-one"])


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([""], ["abort", "completion", "get", "history", "list", "pause", "promote", "resume", "rollback",
                "status"]),
        (["p"], ["pause", "promote"]),
        (["-n", "ml", "ge"], ["get"]),
        (["get", ""], ["default-one"]),
        (["-n", "ml", "get", "ch"], ["churn", "churn-v2"]),
        (["get", "-n", "ml", ""], ["churn", "churn-v2", "fraud"]),
        (["get", "churn", ""], []),  # one name only
        (["get", "churn", "-o", ""], ["json", "yaml"]),
        (["get", "churn", "--output", "y"], ["yaml"]),
        (["get", "churn", "--w"], ["--watch"]),
        (["rollback", "churn", "--"], ["--context", "--help", "--kubeconfig", "--namespace", "--to",
                                       "--wait"]),
        (["list", ""], []),
        (["list", "-"], ["--all-namespaces", "--context", "--help", "--kubeconfig", "--namespace", "--output",
                         "-A", "-h", "-n", "-o"]),
        (["completion", ""], ["bash", "tcsh", "zsh"]),
        (["-n", ""], []),  # namespaces are not completed
    ],
)  # fmt: skip
def test_kubectl_plugin_completion(words: list[str], expected: list[str]) -> None:
    assert kubectl_complete.complete(words, names) == expected


def test_the_completion_executable_ends_with_a_directive(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubectl_complete, "_cluster_names", lambda *_: [])
    kubectl_complete.main(["pro"])
    assert capsys.readouterr().out == "promote\n:4\n"


def test_names_from_an_unreachable_cluster_are_none(tmp_path: object) -> None:
    assert kubectl_complete._cluster_names(None, "/nonexistent/kubeconfig", None) == []
