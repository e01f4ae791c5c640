"""The plugin's views, pure functions of an object: the whole `get` view checked line by line, colour
only when asked for and never shifting a column, `list` like `kubectl get`, steps of unknown kinds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from modeldeploy_kubectl.render import (
    PLAIN,
    Style,
    age,
    describe_step,
    human_duration,
    render_history,
    render_list,
    render_view,
)

from plugin_fakes import canary_body, ready_body

ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOW = datetime(2026, 1, 2, 5, 4, 30, tzinfo=UTC)

CANARY_VIEW = """\
Name:        churn
Namespace:   ml
Phase:       ◌ Progressing - analysis of revision 2
URL:         http://churn.ml.svc.cluster.local:8080/v2/models/churn
Strategy:    Canary
  Step:      3/5
Stable:      revision 1  aaaa111111  version 1
Canary:      revision 2  bbbb222222  version 2  (weight 20%)
Replicas:    3/3 ready
Steps:
  ✓ 1. setWeight 20%
  ✓ 2. pause 1m
  ▶ 3. analysis 2m (errors)
    4. setWeight 50%
    5. pause (until resumed)
Revisions:
  VARIANT  WEIGHT  REVISION    ROLE    #  VERSION  TRAFFIC  READY
  default  100%    aaaa111111  stable  1  1        80%      2/2
  default  100%    bbbb222222  canary  2  2        20%      1/1
Analysis:    bbbb222222  (last run 2026-01-02 03:06:00)
  CHECK    RESULT  VALUE  SAMPLES  FAILURES  RECENT      WHEN                 DETAIL
  errors   Pass    0.01   500      0         0.012 0.01  2026-01-02 03:06:00
  latency  Fail    0.93   500      1         0.93        2026-01-02 03:06:00  p99 above 0.5
Conditions:  Ready=True (Serving)"""


def test_the_watch_view_of_a_canary_in_analysis() -> None:
    assert render_view(canary_body()) == CANARY_VIEW


def test_get_adds_recent_events() -> None:
    events = [
        {
            "lastTimestamp": "2026-01-02T03:05:00Z",
            "type": "Normal",
            "reason": "RolloutStarted",
            "message": "v2",
        },
        {
            "lastTimestamp": "2026-01-02T03:06:00Z",
            "type": "Warning",
            "reason": "CheckFailed",
            "message": "p99",
        },
    ]
    text = render_view(canary_body(), events)
    assert text.startswith(CANARY_VIEW)
    assert text.endswith(
        "Events:\n"
        "  2026-01-02 03:05:00  Normal   RolloutStarted  v2\n"
        "  2026-01-02 03:06:00  Warning  CheckFailed     p99"
    )
    assert render_view(canary_body(), []).endswith("Events:\n  (none)")


def test_outside_a_rollout_no_step_is_marked() -> None:
    text = render_view(ready_body())
    assert "Phase:       ✔ Ready" in text
    assert "Step:" not in text
    assert "Canary:" not in text
    assert "    1. setWeight 20%" in text
    assert "▶" not in text
    assert "✓" not in text


def test_paused_aborted_pinned_command_and_error_lines() -> None:
    body = canary_body()
    body["status"].update(
        {
            "phase": "Paused",
            "aborted": True,
            "pinnedRevision": 1,
            "pause": {"reason": "Failure", "since": "2026-01-02T03:07:00Z", "message": "latency failed"},
            "lastCommand": {
                "id": "x",
                "action": "pause",
                "result": "Rejected",
                "message": "nothing to pause",
                "time": "2026-01-02T03:07:30Z",
            },
            "lastError": {"reason": "ApiRejected", "message": "forbidden", "time": "2026-01-02T03:08:00Z"},
        }
    )
    text = render_view(body)
    assert "Phase:       ॥ Paused" in text
    assert "(aborted)" in text
    assert "Step:" not in text  # an aborted rollout has no step in progress
    assert "Paused:      Failure since 2026-01-02 03:07:00: latency failed" in text
    assert "Pinned:      revision 1" in text
    assert "Last command: pause -> Rejected: nothing to pause  (2026-01-02 03:07:30)" in text
    assert "Last error:  ApiRejected: forbidden" in text


def test_a_timed_pause_shows_when_it_ends() -> None:
    body = canary_body()
    body["status"].update(
        {
            "currentStepIndex": 1,
            "pause": {"reason": "Step", "since": "2026-01-02T03:05:00Z", "until": "2026-01-02T03:06:00Z"},
        }
    )
    assert "  ▶ 2. pause 1m  (until 2026-01-02 03:06:00)" in render_view(body)


def test_colour_marks_phase_results_and_steps_without_moving_columns() -> None:
    coloured = render_view(canary_body(), style=Style(color=True))
    assert ANSI.sub("", coloured) == CANARY_VIEW
    assert "\x1b[33m◌ Progressing\x1b[0m" in coloured
    assert "\x1b[32mPass  \x1b[0m" in coloured  # green, padded inside the colour
    assert "\x1b[31mFail  \x1b[0m" in coloured
    assert "\x1b[33m▶ 3. analysis 2m (errors)\x1b[0m" in coloured
    assert "\x1b[" not in render_view(canary_body(), style=PLAIN)


@pytest.mark.parametrize(
    ("step", "text"),
    [
        ({"setWeight": 5}, "setWeight 5%"),
        ({"pause": {}}, "pause (until resumed)"),
        ({"pause": None}, "pause (until resumed)"),
        ({"pause": {"duration": "30s"}}, "pause 30s"),
        ({"analysis": {}}, "analysis (all checks)"),
        ({"analysis": {"duration": "5m", "checks": ["a", "b"]}}, "analysis 5m (a, b)"),
        ({"shadow": {"percent": 10, "duration": "1m"}}, "shadow 10% mirrored 1m (all checks)"),
        ({"shadow": {"duration": "30s", "checks": ["agree"]}}, "shadow 100% mirrored 30s (agree)"),
        ({"shadow": {"percent": 10}}, 'shadow {"percent":10}'),  # not a valid shadow step: as JSON
        ({"rollback": {"to": 3}}, 'rollback {"to":3}'),  # a kind from a newer operator
    ],
)
def test_describe_step(step: dict[str, object], text: str) -> None:
    assert describe_step(step) == text


def test_list_is_a_kubectl_table() -> None:
    bodies = [ready_body("fraud", "risk"), canary_body()]
    assert render_list(bodies, all_namespaces=True, now=NOW).splitlines() == [
        "NAMESPACE  NAME   MODEL  PHASE        STEP  CANARY  READY  URL"
        "                                                       AGE",
        "ml         churn  1      Progressing  3/5   20%     3/3    "
        "http://churn.ml.svc.cluster.local:8080/v2/models/churn    120m",
        "risk       fraud  1      Ready        -     -       2/2    "
        "http://fraud.risk.svc.cluster.local:8080/v2/models/fraud  120m",
    ]
    one = render_list([canary_body()], all_namespaces=False, now=NOW).splitlines()
    assert one[0].split() == ["NAME", "MODEL", "PHASE", "STEP", "CANARY", "READY", "URL", "AGE"]
    assert render_list([], all_namespaces=False) == ""


def test_list_of_an_object_the_operator_has_not_seen_yet() -> None:
    body = ready_body()
    del body["status"]
    (_, row) = render_list([body], all_namespaces=False, now=NOW).splitlines()
    assert row.split() == ["churn", "-", "Pending", "-", "-", "0/0", "-", "120m"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-5, "0s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (11000, "3h3m"),
     (86400, "24h"), (180000, "2d2h"), (800000, "9d"), (10**9, "31y")],
)  # fmt: skip
def test_human_duration_is_kubectls(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_age() -> None:
    assert age("2026-01-02T05:00:00Z", NOW) == "4m30s"
    assert age(None, NOW) == "<unknown>"
    assert age("yesterday", NOW) == "<unknown>"


def test_history() -> None:
    lines = render_history(canary_body()).splitlines()
    assert lines[0].split()[:4] == ["REVISION", "VARIANT", "VERSION", "HASH"]
    assert lines[1].split()[:2] == ["1*", "default"]  # serving now
    assert "Progressing" in lines[2]
    assert lines[-1] == "* serving now"
    empty = ready_body()
    empty["status"]["history"] = []
    assert render_history(empty) == "no revisions yet"


PINNED, OTHER = "ab" * 32, "cd" * 32


@pytest.mark.parametrize(
    ("loaded", "pinned", "shown"),
    [
        (None, PINNED, "-"),  # no server loaded it yet (or an aborted canary no pod ever loaded)
        ([PINNED], PINNED, "abababababab"),
        ([OTHER], None, "cdcdcdcdcdcd"),  # unpinned: whatever the URI held
        ([PINNED, OTHER], None, "abababababab,cdcdcdcdcdcd"),  # the URI's content changed
        ([OTHER], PINNED, "cdcdcdcdcdcd!"),  # not the pinned digest
    ],
)
def test_history_shows_the_digest_the_servers_loaded(
    loaded: list[str] | None, pinned: str | None, shown: str
) -> None:
    body = canary_body()
    entry = body["status"]["history"][0]
    entry["sha256"] = pinned
    if loaded is not None:
        entry["loadedSha256"] = loaded
    header, first = render_history(body).splitlines()[:2]
    columns = header.split()
    assert columns[5:7] == ["SHA256", "LOADED"]
    assert first.split()[6] == shown
    assert first.split()[5] == (pinned[:12] if pinned else "-")


def test_status_values_from_a_newer_operator_are_left_out_not_fatal() -> None:
    body = canary_body()
    body["status"]["phase"] = "Mirroring"  # a phase this plugin's contract does not know
    body["status"]["variants"][0]["revisions"][1]["role"] = "mirror"
    body["status"]["newField"] = {"anything": 1}  # unknown fields are simply ignored
    text = render_view(body)
    assert "Phase:       ◌ Pending" in text
    assert "Canary:      revision 2  bbbb222222  version 2  (weight 20%)" in text
    assert "CHECK    RESULT" in text
    assert text.endswith(
        "Not shown:   status fields this plugin cannot read: phase, variants "
        "(an operator newer than the plugin? upgrade modeldeploy-kubectl)"
    )
    assert "churn" in render_list([body], all_namespaces=False, now=NOW)


def test_a_revision_in_its_rollback_window_says_until_when_a_rollback_is_instant() -> None:
    body = ready_body()
    body["status"]["variants"][0]["revisions"].append(
        {
            "revision": "cccc000000",
            "role": "previous",
            "weight": 0,
            "replicas": 1,
            "readyReplicas": 1,
            "number": 2,
            "modelVersion": "0",
            "warmUntil": "2026-01-02T05:09:30Z",
        }
    )
    text = render_view(body)
    assert "  default  100%    cccc000000  previous (warm until 2026-01-02 05:09:30)  2  0" in text
    assert "  default  100%    aaaa111111  stable" in text


@pytest.mark.parametrize(
    ("bad", "note"),
    [
        ("abc", "loadedSha256 of revision 1"),  # not a list
        ([1, 2], "loadedSha256 of revision 1"),  # not strings
        (["ab" * 32] * 9, "loadedSha256 of revision 1"),  # more than the 4 the status keeps
        ({"a": 1}, "loadedSha256 of revision 1"),
    ],
)
def test_an_unreadable_loaded_digest_costs_that_field_not_the_history(bad: object, note: str) -> None:
    body = canary_body()
    body["status"]["history"][0]["loadedSha256"] = bad
    lines = render_history(body).splitlines()
    assert lines[1].split()[:2] == ["1*", "default"]
    assert lines[1].split()[6] == "-"
    assert "Progressing" in lines[2]  # the other revision is untouched
    assert lines[-1].startswith("Not shown: ")
    assert note in lines[-1]


def test_an_entry_without_its_required_fields_is_named_and_the_rest_shown() -> None:
    body = canary_body()
    del body["status"]["history"][0]["hash"]
    body["status"]["history"].append("not an object")
    lines = render_history(body).splitlines()
    assert lines[1].split()[0] == "2"
    assert (
        lines[-1]
        == "Not shown: revision 1 (unreadable), revision #3 (unreadable) (an operator newer than the plugin?)"
    )
    body["status"]["history"] = "nonsense"
    assert render_history(body) == "no revisions yet"
