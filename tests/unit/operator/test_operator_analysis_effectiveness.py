"""`effectiveness` checks (issue 15): the joiner's summary turned into readings, and the planner's
evaluation of them ("promote when the new revision's AUC is not lower than the stable's by more than
0.005 with at least 2,000 labels per arm"); the bounded read of a local joiner stand-in."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from modeldeploy_contract import effectiveness as fx
from modeldeploy_contract.effectiveness import (
    ArmQuality,
    ArmWindow,
    DeploymentSummary,
    DeploymentWindow,
    EffectivenessSummary,
)
from modeldeploy_operator.analysis import AddressPolicy, AnalysisSources, AnalysisTarget
from modeldeploy_operator.analysis.effectiveness import (
    JoinerReader,
    auc_variance,
    difference_interval,
    pick_window,
    reading_from_summary,
)
from modeldeploy_operator.domain.rollout.evaluation import measure_all
from modeldeploy_operator.domain.spec import Analysis, Check, JoinerSource

from modeldeploy_builders import NOW

TARGET = AnalysisTarget("ml", "churn", "default", "newrev", "oldrev")
CHECK = Check.model_validate(
    {"name": "auc", "type": "effectiveness", "threshold": {"min": -0.005}, "minSamples": 2000}
)
ACCURACY = Check.model_validate(
    {
        "name": "acc",
        "type": "effectiveness",
        "threshold": {"min": -0.02},
        "effectiveness": {"metric": "accuracy", "windowSeconds": 86400},
    }
)


def _arm_quality(auc: float, labelled: int, positives: int, accuracy: float = 0.75) -> ArmQuality:
    return ArmQuality(
        predictions=labelled * 2,
        labelled=labelled,
        positives=positives,
        coverage=0.5,
        accuracy=accuracy,
        auc=auc,
        log_loss=0.5,
        brier=0.2,
        ece=0.05,
    )


def _summary(
    new: ArmQuality | None, old: ArmQuality | None, windows: tuple[float, ...] = (86400.0, 604800.0)
) -> EffectivenessSummary:
    arms = []
    if new is not None:
        arms.append(ArmWindow(variant="default", revision="newrev", model_version="2", quality=new))
    if old is not None:
        arms.append(ArmWindow(variant="default", revision="oldrev", model_version="1", quality=old))
    return EffectivenessSummary(
        generated_at=0,
        retention_seconds=86400 * 30,
        deployments=[
            DeploymentSummary(
                deployment="churn",
                control_variant=None,
                windows=[DeploymentWindow(window_seconds=w, arms=arms, variants=[], ab=[]) for w in windows],
            )
        ],
    )


def test_hanley_mcneil_variance_worked_example() -> None:
    # A = 0.8, 50 positives, 50 negatives: Q1 = 0.8/1.2 = 0.6667, Q2 = 1.28/1.8 = 0.7111,
    # Var = (0.16 + 49 * 0.02667 + 49 * 0.07111) / 2500 = 0.0019804, SE 0.0445
    var = auc_variance(0.8, 50, 50)
    assert var is not None
    assert var == pytest.approx(0.0019804, abs=1e-6)
    assert auc_variance(0.8, 0, 10) is None


def test_the_hanley_mcneil_se_agrees_with_delong_on_binormal_scores() -> None:
    rng = random.Random(7)
    labels = [int(rng.random() < 0.3) for _ in range(3000)]
    scores = [rng.gauss(1.0 if y else 0.0, 1.0) for y in labels]
    auc = fx.auc(scores, labels)
    delong = fx.auc_variance(scores, labels)
    assert auc is not None
    assert delong is not None
    hm = auc_variance(auc, sum(labels), len(labels) - sum(labels))
    assert hm is not None
    assert delong[1] ** 0.5 == pytest.approx(hm**0.5, rel=0.1)


def test_a_new_revision_as_good_as_the_stable_passes_with_enough_labels() -> None:
    summary = _summary(_arm_quality(0.83, 4000, 1200), _arm_quality(0.83, 4000, 1200))
    reading = reading_from_summary(CHECK, summary, TARGET, NOW)
    assert reading.samples == 4000
    assert reading.value is not None
    assert -0.03 < reading.value < 0  # the lower end of a CI centred on 0
    assert "interval" in reading.detail
    analysis = Analysis(
        checks=(CHECK.model_copy(update={"threshold": CHECK.threshold.model_copy(update={"min": -0.03})}),)
    )
    (status,) = measure_all(analysis, (), [reading], NOW)
    assert status.result == "Pass"


def test_a_clearly_worse_new_revision_fails() -> None:
    summary = _summary(_arm_quality(0.70, 4000, 1200), _arm_quality(0.83, 4000, 1200))
    reading = reading_from_summary(CHECK, summary, TARGET, NOW)
    assert reading.value is not None
    assert reading.value < -0.1
    (status,) = measure_all(Analysis(checks=(CHECK,)), (), [reading], NOW)
    assert status.result == "Fail"


def test_too_few_labels_is_inconclusive_however_good() -> None:
    summary = _summary(_arm_quality(0.95, 150, 50), _arm_quality(0.70, 5000, 1500))
    reading = reading_from_summary(CHECK, summary, TARGET, NOW)
    assert reading.samples == 150
    (status,) = measure_all(Analysis(checks=(CHECK,)), (), [reading], NOW)
    assert status.result == "Inconclusive"


@pytest.mark.parametrize(
    ("summary", "why"),
    [
        (_summary(None, _arm_quality(0.8, 100, 30)), "new revision"),
        (_summary(_arm_quality(0.8, 100, 30), None), "stable revision"),
        (EffectivenessSummary(generated_at=0, retention_seconds=1, deployments=[]), "no predictions"),
        (_summary(_arm_quality(0.8, 100, 30), _arm_quality(0.8, 100, 30), windows=()), "no window"),
    ],
)
def test_missing_data_is_no_reading(summary: EffectivenessSummary, why: str) -> None:
    reading = reading_from_summary(CHECK, summary, TARGET, NOW)
    assert reading.value is None
    assert why in reading.detail


def test_an_arm_with_one_class_has_no_auc_interval() -> None:
    one_class = _arm_quality(0.8, 100, 0)
    reading = reading_from_summary(CHECK, _summary(one_class, _arm_quality(0.8, 100, 30)), TARGET, NOW)
    assert reading.value is None
    assert reading.samples == 100


def test_accuracy_uses_newcombes_interval() -> None:
    new, old = _arm_quality(0.8, 80, 30, accuracy=48 / 80), _arm_quality(0.8, 70, 30, accuracy=56 / 70)
    found = difference_interval("accuracy", old, new, 0.95)
    assert found is not None
    diff, lower, upper = found
    # Newcombe's example 56/70 - 48/80: 0.0524 to 0.3339 (here new - stable, so negated)
    assert (lower, upper) == pytest.approx((-0.3339, -0.0524), abs=1e-4)
    assert diff == pytest.approx(-0.2)
    reading = reading_from_summary(ACCURACY, _summary(new, old), TARGET, NOW)
    assert reading.value == pytest.approx(-0.3339, abs=1e-4)


def test_the_window_is_the_smallest_at_least_as_long_else_the_longest() -> None:
    windows = _summary(None, None, windows=(86400.0, 604800.0, 2592000.0)).deployments[0].windows
    assert pick_window(windows, 3600) is not None
    assert pick_window(windows, 3600).window_seconds == 86400  # type: ignore[union-attr]
    assert pick_window(windows, 604800).window_seconds == 604800  # type: ignore[union-attr]
    assert pick_window(windows, 9e9).window_seconds == 2592000  # type: ignore[union-attr]
    assert pick_window([], 1) is None


# --- the read, against a local stand-in of the joiner ----------------------------------------------


class _Joiner(BaseHTTPRequestHandler):
    answer: ClassVar[tuple[int, bytes]] = (200, b"{}")
    paths: ClassVar[list[str]] = []

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.paths.append(self.path)
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the reader stopped at its limit
            self.wfile.write(body)


@pytest.fixture
def joiner() -> Iterator[tuple[str, type[_Joiner]]]:
    handler = type("J", (_Joiner,), {"paths": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_the_reader_fetches_the_fresh_summary_of_an_allowed_joiner(joiner: tuple[str, type[_Joiner]]) -> None:
    address, handler = joiner
    summary = _summary(_arm_quality(0.83, 3000, 900), _arm_quality(0.83, 3000, 900))
    handler.answer = (200, summary.model_dump_json().encode())
    reader = JoinerReader(AddressPolicy((address,), what="joiner"))
    (reading,) = reader.read([CHECK], JoinerSource(address=address), TARGET, NOW)
    assert reading.samples == 3000
    assert reading.value is not None
    assert handler.paths == ["/v1/effectiveness?fresh=1"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ((503, b'{"error": "store"}'), "HTTP 503"),
        ((200, b"not json"), "not understood"),
        ((200, json.dumps({"deployments": "x"}).encode()), "not understood"),
        ((200, b"x" * (4 * 1024 * 1024 + 10)), "larger than"),
    ],
)
def test_a_bad_joiner_answer_is_no_reading(
    joiner: tuple[str, type[_Joiner]], answer: tuple[int, bytes], why: str
) -> None:
    address, handler = joiner
    handler.answer = answer
    reader = JoinerReader(AddressPolicy((address,), what="joiner"))
    (reading,) = reader.read([CHECK], JoinerSource(address=address), TARGET, NOW)
    assert reading.value is None
    assert why in reading.detail


def test_an_address_outside_the_allow_list_is_never_contacted(joiner: tuple[str, type[_Joiner]]) -> None:
    address, handler = joiner
    reader = JoinerReader(AddressPolicy(what="joiner"))
    (reading,) = reader.read([CHECK], JoinerSource(address=address), TARGET, NOW)
    assert reading.value is None
    assert "joiner checks are disabled" in reading.detail
    reader = JoinerReader(AddressPolicy(("http://other:8090",), what="joiner"))
    (reading,) = reader.read([CHECK], JoinerSource(address="http://169.254.169.254"), TARGET, NOW)
    assert "not in the operator's allow-list" in reading.detail
    assert handler.paths == []


def test_sources_route_effectiveness_checks_to_the_joiner_even_with_prometheus(
    joiner: tuple[str, type[_Joiner]],
) -> None:
    address, handler = joiner
    handler.answer = (
        200,
        _summary(_arm_quality(0.83, 3000, 900), _arm_quality(0.83, 3000, 900)).model_dump_json().encode(),
    )
    sources = AnalysisSources(joiner=JoinerReader(AddressPolicy((address,), what="joiner")))
    analysis = Analysis.model_validate(
        {
            "checks": [CHECK.model_dump(by_alias=True, exclude_none=True)],
            "prometheus": {"address": "http://prometheus.monitoring:9090"},
            "joiner": {"address": address},
        }
    )
    (reading,) = sources.read(analysis, analysis.checks, TARGET)
    assert reading.samples == 3000
    assert handler.paths == ["/v1/effectiveness?fresh=1"]
