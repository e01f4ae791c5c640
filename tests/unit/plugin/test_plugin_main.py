"""kubectl-modeldeploy's commands against a fake cluster: -o json|yaml, list, get --watch (redraws,
colour, its end), the documented exit codes, and a clear usage error (exit 2) for every bad flag."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

import pytest
import yaml

from modeldeploy_kubectl import main as cli
from modeldeploy_kubectl.client import ApiError
from modeldeploy_kubectl.main import (
    CLEAR_SCREEN,
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_NOT_APPLIED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    duration,
    run,
    use_color,
)

from plugin_fakes import FakeCluster, annotation_of, canary_body, ready_body


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def call(
    cluster: FakeCluster, *argv: str, code: int = EXIT_OK, out: io.StringIO | None = None, **env: str
) -> tuple[str, str]:
    out = out if out is not None else io.StringIO()
    err = io.StringIO()
    got = run(["-n", "ml", *argv], cluster=cluster, out=out, err=err, environ=env)
    assert got == code, f"exit {got}, wanted {code}: {err.getvalue()}"
    return out.getvalue(), err.getvalue()


# -- read commands and -o ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["get", "status"])
def test_get_json_and_yaml_are_the_object(command: str) -> None:
    cluster = FakeCluster(canary_body())
    as_json, _ = call(cluster, command, "churn", "-o", "json")
    assert json.loads(as_json) == canary_body()
    as_yaml, _ = call(cluster, command, "churn", "-o", "yaml")
    assert yaml.safe_load(as_yaml) == canary_body()


def test_flags_may_follow_the_command_as_in_kubectl() -> None:
    cluster = FakeCluster(canary_body())
    out = io.StringIO()
    assert run(["get", "churn", "-n", "ml", "--output=json"], cluster=cluster, out=out, environ={}) == 0
    assert json.loads(out.getvalue())["metadata"]["name"] == "churn"


def test_list_one_namespace_and_all() -> None:
    cluster = FakeCluster(canary_body(), ready_body("fraud", "risk"))
    text, _ = call(cluster, "list")
    assert cluster.listed == ["ml"]
    assert text.splitlines()[0].startswith("NAME ")
    assert len(text.splitlines()) == 2
    text, _ = call(cluster, "list", "-A")
    assert cluster.listed[-1] is None
    assert text.splitlines()[0].startswith("NAMESPACE ")
    assert [line.split()[1] for line in text.splitlines()[1:]] == ["churn", "fraud"]


def test_list_as_json_and_yaml_is_a_kubernetes_list() -> None:
    cluster = FakeCluster(canary_body(), ready_body("fraud", "risk"))
    listed = json.loads(call(cluster, "list", "--all-namespaces", "-o", "json")[0])
    assert (listed["apiVersion"], listed["kind"]) == ("v1", "List")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["churn", "fraud"]
    assert yaml.safe_load(call(cluster, "list", "-o", "yaml")[0])["items"][0]["metadata"]["name"] == "churn"


def test_an_empty_list_says_so() -> None:
    text, _ = call(FakeCluster(), "list")
    assert text == "No modeldeployments found in namespace ml.\n"


def test_history_as_yaml() -> None:
    entries = yaml.safe_load(call(FakeCluster(canary_body()), "history", "churn", "-o", "yaml")[0])
    assert [e["outcome"] for e in entries] == ["Promoted", "Progressing"]


# -- get --watch ----------------------------------------------------------------------------------


def _later(body: dict[str, Any], **status: Any) -> dict[str, Any]:
    body["status"].update(status)
    return body


def test_watch_redraws_only_when_the_view_changes() -> None:
    first = canary_body()
    same_view = _later(canary_body(), kopf={"dummy": "x"})  # kopf's bookkeeping: nothing to show
    promoted = _later(canary_body(), currentStepIndex=3, canaryWeight=50)
    cluster = FakeCluster(first, frames=[("MODIFIED", same_view), ("MODIFIED", promoted)])
    text, _ = call(cluster, "get", "churn", "--watch", "--timeout", "5m")
    frames = text.split("\n\n")
    assert (
        len([f for f in frames if f.strip()]) == 2
    )  # the first object (get, then the watch's ADDED), then 50%
    assert "▶ 3. analysis" in frames[0]
    assert "▶ 4. setWeight 50%" in frames[1]
    assert "\x1b[" not in text  # not a terminal: no clear-screen, no colour
    assert cluster.watched == [("ml", "churn", 300.0)]


def test_watch_on_a_terminal_clears_and_colours() -> None:
    cluster = FakeCluster(canary_body(), frames=[("MODIFIED", _later(canary_body(), canaryWeight=50))])
    text, _ = call(cluster, "get", "churn", "-w", out=Terminal())
    assert text.count(CLEAR_SCREEN) == 2
    assert "\x1b[33m◌ Progressing\x1b[0m" in text


def test_no_color_turns_colour_off_on_a_terminal() -> None:
    text, _ = call(FakeCluster(canary_body()), "get", "churn", "-w", out=Terminal(), NO_COLOR="1")
    assert CLEAR_SCREEN in text
    assert "\x1b[33m" not in text


def test_use_color() -> None:
    assert use_color(Terminal(), {})
    assert not use_color(Terminal(), {"NO_COLOR": "1"})
    assert not use_color(Terminal(), {"TERM": "dumb"})
    assert use_color(Terminal(), {"NO_COLOR": ""})  # no-color.org: set *and non-empty*
    assert not use_color(io.StringIO(), {})


def test_ctrl_c_ends_a_watch_with_0() -> None:
    text, err = call(FakeCluster(canary_body(), interrupt_watch=True), "get", "churn", "--watch")
    assert "Name:        churn" in text
    assert err == ""


def test_a_deleted_object_ends_the_watch_with_1() -> None:
    cluster = FakeCluster(canary_body(), frames=[("DELETED", canary_body())])
    _, err = call(cluster, "get", "churn", "--watch", code=EXIT_NOT_FOUND)
    assert 'modeldeployment "churn" was deleted' in err


def test_watch_as_json_is_one_line_per_change() -> None:
    cluster = FakeCluster(canary_body(), frames=[("MODIFIED", _later(canary_body(), canaryWeight=50))])
    lines = call(cluster, "get", "churn", "--watch", "-o", "json")[0].splitlines()
    assert [json.loads(line)["status"]["canaryWeight"] for line in lines] == [20, 50]
    docs = call(cluster, "get", "churn", "--watch", "-o", "yaml")[0]
    assert len(list(yaml.safe_load_all(docs))) == 2


def test_watch_of_a_missing_object_exits_1() -> None:
    call(FakeCluster(), "get", "nope", "--watch", code=EXIT_NOT_FOUND)


# -- manual commands and their exit codes ------------------------------------------------------


def test_applied_exits_0() -> None:
    cluster = FakeCluster(canary_body(), message="rollout aborted")
    text, _ = call(cluster, "abort", "churn")
    assert text == "churn: abort applied: rollout aborted\n"
    assert json.loads(annotation_of(cluster.patches[0]))["action"] == "abort"


def test_ignored_exits_0_and_says_so() -> None:
    text, _ = call(FakeCluster(canary_body(), answer="Ignored", message="not paused"), "resume", "churn")
    assert text == "churn: resume ignored: not paused\n"


def test_rejected_exits_4_with_the_operators_message() -> None:
    cluster = FakeCluster(canary_body(), answer="Rejected", message="revision 1 cannot be restored")
    out, err = call(cluster, "rollback", "churn", "--to", "1", code=EXIT_REJECTED)
    assert out == ""
    assert err == "error: rollback rejected: revision 1 cannot be restored\n"


def test_not_applied_within_wait_exits_3() -> None:
    cluster = FakeCluster(canary_body(), answer=None)
    _, err = call(cluster, "promote", "churn", "--full", "--wait", "1m", code=EXIT_NOT_APPLIED)
    assert "promote not applied within 60s" in err
    assert cluster.watched == [("ml", "churn", 60.0)]  # waited on a watch, not by polling
    assert json.loads(annotation_of(cluster.patches[0])) == {
        "id": json.loads(annotation_of(cluster.patches[0]))["id"],
        "action": "promote",
        "full": True,
    }


def test_an_answer_to_an_earlier_command_is_not_this_ones_answer() -> None:
    """status.lastCommand answers an older id (the operator is down): not applied, exit 3."""
    body = canary_body()
    body["status"]["lastCommand"] = {
        "id": "an-earlier-command",
        "action": "abort",
        "result": "Applied",
        "message": "rollout aborted",
        "time": "2026-01-02T03:04:05Z",
    }
    frames = [("MODIFIED", copy.deepcopy(body)), ("MODIFIED", copy.deepcopy(body))]
    cluster = FakeCluster(body, answer=None, frames=frames)
    _, err = call(cluster, "abort", "churn", "--wait", "2s", code=EXIT_NOT_APPLIED)
    assert "abort not applied within 2s" in err
    assert "the annotation stays" in err


def test_wait_0_checks_once_without_a_watch() -> None:
    cluster = FakeCluster(canary_body(), answer=None)
    _, err = call(cluster, "pause", "churn", "--wait", "0", code=EXIT_NOT_APPLIED)
    assert "pause not applied within 0s" in err
    assert cluster.watched == []
    answered = FakeCluster(canary_body(), message="rollout paused")
    text, _ = call(answered, "pause", "churn", "--wait", "0")
    assert text == "churn: pause applied: rollout paused\n"


def test_a_command_on_a_missing_object_exits_1() -> None:
    _, err = call(FakeCluster(), "pause", "nope", code=EXIT_NOT_FOUND)
    assert 'modeldeployment "nope" not found in namespace "ml"' in err


def test_api_errors_exit_5(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(canary_body())

    def refuse(namespace: str, name: str) -> dict[str, Any]:
        raise ApiError("API server: 403 Forbidden")

    monkeypatch.setattr(cluster, "get", refuse)
    _, err = call(cluster, "get", "churn", code=EXIT_API)
    assert err == "error: API server: 403 Forbidden\n"

    def unreachable(namespace: str, name: str) -> dict[str, Any]:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(cluster, "get", unreachable)
    _, err = call(cluster, "get", "churn", code=EXIT_API)
    assert err == "error: ConnectionRefusedError: connection refused\n"


def test_ctrl_c_outside_a_watch_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster(canary_body(), answer=None)

    def interrupted(*_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cluster, "watch", interrupted)
    call(cluster, "abort", "churn", code=EXIT_INTERRUPTED)


def test_a_bad_kubeconfig_exits_5(tmp_path: Any) -> None:
    err = io.StringIO()
    missing = str(tmp_path / "nope")
    assert run(["--kubeconfig", missing, "get", "churn"], out=io.StringIO(), err=err) == EXIT_API
    assert err.getvalue().startswith("error: ")


def test_main_exits_with_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "run", lambda argv=None: EXIT_NOT_APPLIED)
    with pytest.raises(SystemExit) as exited:
        cli.main(["abort", "x"])
    assert exited.value.code == EXIT_NOT_APPLIED


# -- usage errors: exit 2 with a message naming the problem --------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate", "churn"], "invalid choice: 'frobnicate'"),
        (["get"], "the following arguments are required: NAME"),
        (["get", "churn", "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
        (["get", "churn", "--timeout", "5m"], "--timeout is only for --watch"),
        (["get", "churn", "--watch", "--timeout", "soon"], "invalid duration 'soon'"),
        (["get", "churn", "--watch", "--timeout", "-1"], "must be a finite number >= 0"),
        (["get", "churn", "--watch", "--timeout=-1"], "must be a finite number >= 0"),
        (["get", "churn", "-A"], "unrecognized arguments: -A"),
        (["list", "churn"], "unrecognized arguments: churn"),
        (["list", "-o", "table"], "invalid choice: 'table'"),
        (["history", "churn", "-o", "wide"], "invalid choice: 'wide'"),
        (["abort", "churn", "--wait", "abc"], "invalid duration 'abc'"),
        (["abort", "churn", "--wait=-5"], "must be a finite number >= 0"),
        (["pause", "churn", "--wait", "nan"], "must be a finite number >= 0"),
        (["resume", "churn", "--wait", "10x"], "invalid duration '10x'"),
        (["rollback", "churn", "--to", "0"], "revision numbers start at 1"),
        (["rollback", "churn", "--to", "two"], "invalid revision 'two'"),
        (["promote", "churn", "--to", "1"], "unrecognized arguments: --to 1"),
        (["abort", "churn", "--full"], "unrecognized arguments: --full"),
        (["abort", "churn", "-o", "json"], "unrecognized arguments: -o json"),
        (["completion", "fish"], "invalid choice: 'fish'"),
        (["completion"], "the following arguments are required: shell"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str) -> None:
    cluster = FakeCluster(canary_body())
    out, err = call(cluster, *argv, code=EXIT_USAGE)
    assert message in err
    assert "usage: kubectl modeldeploy" in err
    assert out == ""
    assert cluster.patches == []


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"], cluster=FakeCluster()) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit codes: 0 ok, 1 not found, 2 usage, 3 not applied within --wait, 4 rejected, 5 API" in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ("30s", 30.0), ("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5), ("0", 0.0)],
)
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds
