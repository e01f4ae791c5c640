"""Delayed labels and A/B verdicts on the local cluster (issue 15: "labels sent days later (clock
injected) join correctly across a joiner restart; an A/B with a real quality difference is called with
the right sign and a correct interval, and one without a difference stays Inconclusive").

1. A joiner whose SQLite store is on a PersistentVolumeClaim (a hostPath PersistentVolume on the real
   node, made by the test): predictions of today through the router (the model server feeds the
   joiner), and a week-old history posted to the joiner's intake with each record's own `time` (the
   clock a record carries; the joiner stores it as given). The joiner's pod is deleted and its
   replacement opens the same file; then every label comes through the router's feedback route and
   joins. The 1-day and 7-day windows hold today's predictions only, the 30-day window all of them,
   with the accuracy and AUC scikit-learn gives on the callers' own answers. A record older than the
   30-day retention was purged by the new joiner: its label is an unknown request.
2. Two A/Bs at once on the golden customers: v2 (control) against v3 (trained on corrupted labels),
   users split by a sticky key, is called ControlBetter with the AUC difference and DeLong interval
   computed here from the joined answers; v2 against the very same bundle under another variant name
   (even customers pinned to one variant, odd ones to the other, so the outcome is fixed by the data:
   a random split calls a winner 5% of the time by design) stays Inconclusive with 500 labels per arm,
   its interval containing the difference computed here and 0. Both read from the joiner's summary and
   from `kubectl modeldeploy status`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from modeldeploy_contract.joiner_settings import JOINER_PORT
from modeldeploy_operator.domain.joiner import joiner_name, joiner_selector
from modeldeploy_operator.domain.manifests import RUN_AS_USER
from modeldeploy_testcluster.layout import Layout

from cluster_helpers import FIRST_READY_SECONDS, create_mdep, hostpath_claim, mdep_status, wait_for
from effectiveness_helpers import (
    Answer,
    auc_difference_interval,
    demo_ab,
    deployment_summary,
    golden,
    plugin_status,
    predict,
    quality,
    recorded,
    send_labels,
    window_of,
)
from rollout_helpers import model
from traffic import ready_endpoints

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator_release")]
HOUR, DAY = 3600.0, 86400.0
WEEK, MONTH = 7 * DAY, 30 * DAY  # the joiner's default windows: 1, 7 and 30 days
CLAIM = "joiner-store"
MIN_LABELS = 200
PIN = "X-Variant"


def effectiveness_md(name: str, spec: dict[str, Any], effectiveness: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"replicas": 1, **spec, "effectiveness": {"retention": "720h", **effectiveness}},
    }


def wait_ready(api: client.ApiClient, namespace: str, name: str) -> None:
    wait_for(
        f"{name} Ready",
        lambda: (mdep_status(api, namespace, name) or {}).get("phase") == "Ready",
        timeout=FIRST_READY_SECONDS,
    )


def wait_recorded(joiner: str, name: str, count: int) -> None:
    """Until the joiner holds `count` prediction records of `name` (the model servers' feed sends
    them in the background)."""
    held: list[int] = []

    def enough() -> bool:
        held.append(recorded(joiner, name))
        return held[-1] == count

    try:
        wait_for(f"{count} prediction records of {name} in the joiner", enough, timeout=120)
    except AssertionError as error:
        raise AssertionError(f"{error}: it holds {held[-1]}") from None


def first_endpoint(api: client.ApiClient, namespace: str, service: str) -> str:
    return wait_for(
        f"a ready {service}", lambda: ready_endpoints(api, namespace, service), timeout=FIRST_READY_SECONDS
    )[0]


@pytest.fixture
def joiner_claim(
    kube_api: client.ApiClient, namespace: str, local_cluster: Layout, tmp_path: Path
) -> Iterator[str]:
    """A PersistentVolumeClaim bound to a hostPath PersistentVolume on the real node (a folder of this
    machine, owned by the serving image's user: the kubelet applies no fsGroup to hostPath)."""
    if not local_cluster.real_node_default:
        pytest.skip("a hostPath volume needs the real node (the process node emulates no hostPath)")
    folder = tmp_path / "joiner-store"
    folder.mkdir()
    os.chown(folder, RUN_AS_USER, RUN_AS_USER)
    with hostpath_claim(kube_api, namespace, local_cluster, CLAIM, folder, "ReadWriteOnce") as claim:
        yield claim


def joiner_pod(api: client.ApiClient, namespace: str, name: str, not_uid: str | None = None) -> Any:
    """The joiner's Ready pod (other than `not_uid`), or None."""
    selector = ",".join(f"{k}={v}" for k, v in joiner_selector(name).items())
    for pod in client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.metadata.uid != not_uid and pod.metadata.deletion_timestamp is None:
            return pod
    return None


def statuses(answer: dict[str, Any]) -> dict[str, str]:
    return {r["request_id"]: r["status"] for r in answer["results"]}


def test_week_old_predictions_join_their_labels_across_a_joiner_restart(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, joiner_claim: str
) -> None:
    store = {"type": "sqlite", "persistentVolumeClaim": joiner_claim}
    md = effectiveness_md("churn", {"model": model(model_store, churn_bundles, "2")}, {"store": store})
    create_mdep(kube_api, namespace, md)
    wait_ready(kube_api, namespace, "churn")
    router = first_endpoint(kube_api, namespace, "churn")
    first = wait_for("a ready joiner", lambda: joiner_pod(kube_api, namespace, "churn"), timeout=120)
    joiner = f"http://{first.status.pod_ip}:{JOINER_PORT}"
    rows = golden(churn_bundles)
    # What v2 answers each golden customer, as packed with the bundle: the week-old history's scores.
    packed = json.loads((churn_bundles / "v2" / "golden.json").read_text())
    assert packed["labels"] == [truth for _, truth in rows]

    with httpx.Client(timeout=15) as http:
        today = predict(http, router, rows[:200], "today")
        for i, answer in enumerate(today.values()):
            assert answer.score == pytest.approx(packed["outputs"][i][1], abs=1e-6)  # the packed model
        # The arm as the model server's feed records it: the history below is that arm's. Its version
        # is spelled as the router's header spells it, the spec's "2" (the bundle was packed as "v2").
        wait_recorded(joiner, "churn", 200)
        summary = deployment_summary(joiner)
        assert summary is not None
        [served] = window_of(summary, MONTH)["arms"]
        assert {(a.variant, a.revision, a.model_version) for a in today.values()} == {
            (served["variant"], served["revision"], served["model_version"])
        }
        assert served["model_version"] == "2"

        def as_of(i: int) -> Answer:
            probabilities = packed["outputs"][i]
            return Answer(
                variant=served["variant"],
                revision=served["revision"],
                model_version=served["model_version"],
                predicted=max(range(len(probabilities)), key=probabilities.__getitem__),
                score=probabilities[1],
                truth=rows[i][1],
            )

        week_old = {f"week-old-{i}": as_of(i) for i in range(200, 500)}
        too_old = {"past-retention": as_of(500)}
        now = time.time()
        records = [
            {
                "request_id": rid,
                "deployment": "churn",
                "variant": a.variant,
                "revision": a.revision,
                "model_version": a.model_version,
                "score": a.score,
                "label": a.predicted,
                "classes": 2,
                "time": now - (31 * DAY if rid in too_old else WEEK + HOUR),
            }
            for rid, a in {**week_old, **too_old}.items()
        ]
        intake = http.post(f"{joiner}/v1/predictions", json={"predictions": records})
        assert intake.status_code == 200, intake.text
        assert intake.json()["stored"] == len(records), intake.json()["counts"]
        # (The one past the retention is in no window.)
        assert recorded(joiner) == 500

        # -- the joiner's pod deleted: its replacement opens the same SQLite file ----------------------
        client.CoreV1Api(kube_api).delete_namespaced_pod(first.metadata.name, namespace)
        second = wait_for(
            "the joiner's replacement pod Ready",
            lambda: joiner_pod(kube_api, namespace, "churn", not_uid=first.metadata.uid),
            timeout=FIRST_READY_SECONDS,
        )
        joiner = f"http://{second.status.pod_ip}:{JOINER_PORT}"
        assert recorded(joiner) == 500  # the same store

        def feedback_route_answers() -> bool:
            probe = {"request_id": "probe", "label": 0}
            answer = http.post(f"{router}/v2/models/churn/feedback", json=probe)
            return answer.status_code == 200 and statuses(answer.json()) == {"probe": "unknown_request"}

        wait_for(
            f"the router's feedback route reaching {joiner_name('churn')} again",
            feedback_route_answers,
            timeout=120,
        )
        # -- days later: the labels, through the router ------------------------------------------------
        labels = send_labels(http, router, {**today, **week_old, **too_old})

    assert statuses(labels) == {
        **dict.fromkeys([*today, *week_old], "joined"),
        "past-retention": "unknown_request",
    }, labels["counts"]
    deployment = deployment_summary(joiner)
    assert deployment is not None
    for seconds, expected in ((DAY, today), (WEEK, today), (MONTH, {**today, **week_old})):
        [arm] = window_of(deployment, seconds)["arms"]
        assert {k: arm[k] for k in ("variant", "revision", "model_version")} == {
            k: served[k] for k in ("variant", "revision", "model_version")
        }
        got = arm["quality"]
        assert got["predictions"] == got["labelled"] == len(expected), (seconds, got)
        accuracy, auc = quality(expected.values())
        assert got["accuracy"] == pytest.approx(accuracy, abs=1e-12), seconds
        assert got["auc"] == pytest.approx(auc, abs=1e-9), seconds
    metrics = httpx.get(f"{joiner}/metrics", timeout=30).text
    assert 'modeldeploy_joiner_labels_total{outcome="joined"} 500.0' in metrics


def test_ab_verdicts_call_a_real_difference_and_not_a_null_one(
    kube_api: client.ApiClient, namespace: str, model_store: str, churn_bundles: Path, kubeconfig: Path
) -> None:
    v2, v3 = model(model_store, churn_bundles, "2"), model(model_store, churn_bundles, "3")
    effectiveness = {"minLabelsPerArm": MIN_LABELS}
    real = {
        "model": v2,
        "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50, "model": v3}],
        "traffic": {"stickyKey": {"header": "X-User-Id"}},
    }
    null = {
        "model": v2,  # both variants serve it
        "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
        "traffic": {"stickyKey": {"header": "X-User-Id"}, "variantPinHeader": PIN},
    }
    create_mdep(kube_api, namespace, effectiveness_md("churn-ab", real, effectiveness))
    create_mdep(kube_api, namespace, effectiveness_md("churn-aa", null, effectiveness))
    for name in ("churn-ab", "churn-aa"):
        wait_ready(kube_api, namespace, name)
    rows = golden(churn_bundles)
    answers: dict[str, dict[str, Answer]] = {}
    joiners = {}
    with httpx.Client(timeout=15) as http:
        router = first_endpoint(kube_api, namespace, "churn-ab")
        answers["churn-ab"] = predict(http, router, rows, "customer", name="churn-ab")
        router_aa = first_endpoint(kube_api, namespace, "churn-aa")
        answers["churn-aa"] = {
            **predict(http, router_aa, rows[0::2], "even", name="churn-aa", headers={PIN: "a"}),
            **predict(http, router_aa, rows[1::2], "odd", name="churn-aa", headers={PIN: "b"}),
        }
        for name, routed in (("churn-ab", router), ("churn-aa", router_aa)):
            joiners[name] = first_endpoint(kube_api, namespace, joiner_name(name))
            wait_recorded(joiners[name], name, len(rows))
            answer = send_labels(http, routed, answers[name], name=name)
            assert answer["joined"] == len(rows), answer["counts"]

    verdicts = {}
    for name in ("churn-ab", "churn-aa"):
        deployment = deployment_summary(joiners[name], name)
        assert deployment is not None
        assert deployment["control_variant"] == "a"
        [ab] = window_of(deployment, DAY)["ab"]
        control = [a for a in answers[name].values() if a.variant == "a"]
        treatment = [a for a in answers[name].values() if a.variant == "b"]
        assert (ab["metric"], ab["control"], ab["treatment"]) == ("auc", "a", "b")
        assert (ab["labelled_control"], ab["labelled_treatment"]) == (len(control), len(treatment))
        assert min(len(control), len(treatment)) >= MIN_LABELS, name
        difference, lower, upper = auc_difference_interval(control, treatment, ab["confidence"])
        assert ab["control_value"] == pytest.approx(quality(control)[1], abs=1e-9)
        assert ab["treatment_value"] == pytest.approx(quality(treatment)[1], abs=1e-9)
        assert ab["difference"] == pytest.approx(difference, abs=1e-9)
        assert (ab["lower"], ab["upper"]) == (pytest.approx(lower, abs=1e-9), pytest.approx(upper, abs=1e-9))
        assert ab["lower"] < difference < ab["upper"], (name, difference, ab)
        verdicts[name] = ab
    real_ab, null_ab = verdicts["churn-ab"], verdicts["churn-aa"]
    assert {a.model_version for a in answers["churn-ab"].values() if a.variant == "b"} == {"3"}
    assert real_ab["upper"] < 0, real_ab  # v3 worse: the interval excludes 0 on the right side
    assert real_ab["verdict"] == "ControlBetter", real_ab
    assert {a.model_version for a in answers["churn-aa"].values()} == {"2"}
    assert null_ab["lower"] < 0 < null_ab["upper"], null_ab
    assert null_ab["verdict"] == "Inconclusive", null_ab
    assert "contains 0" in null_ab["reason"], null_ab

    # -- what a user reads: the 1-day window's verdict line first ------------------------------------
    for name, ab in verdicts.items():
        view = plugin_status(kubeconfig, namespace, name)
        lines = demo_ab().verdict_lines(view)
        assert lines, view
        interval = f"{ab['difference']:+.4f} [{ab['lower']:+.4f}, {ab['upper']:+.4f}] at 95%"
        assert interval in lines[0], view
        assert ab["verdict"] in lines[0], view
