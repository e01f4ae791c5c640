"""Two operator replicas: one leads (holds the Lease and reconciles), the other waits; when the leader
goes, another replica takes over. Each replica exposes health and Prometheus metrics.

- on the shared cluster, the chart installed with two replicas as an operator of the test's own
  (PrivateOperator, beside the shared one and its tests): the leader deleted (SIGTERM releases the
  Lease);
- on a private control plane with an audit log (tests/support/private_operator.py), two replicas as
  local processes, each with a token bound to a pod of its own (the audit log names the pod): the
  leader SIGSTOPped for longer than the lease, the standby takes over within a lease and a renew
  period, and after SIGCONT the old leader writes nothing (fencing, k8s/leader.py) and steps down to
  wait as a standby in the same process (no exit).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from modeldeploy_testcluster.layout import Layout

from cluster_helpers import GROUP, PLURAL, VERSION, create_mdep, get_mdep, mdep_status, wait_for
from operator_fixtures import PrivateOperator, private_operator_installed
from private_operator import (
    KWOK,
    OPERATOR,
    SYSTEM,
    WAIT,
    Plane,
    helm_template,
    install,
    lease_holder,
    operator_env,
    operator_running,
)

pytestmark = [pytest.mark.cluster]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _leader_metric(text: str) -> float:
    line = next(li for li in text.splitlines() if li.startswith("modeldeploy_operator_leader "))
    return float(line.split()[1])


@pytest.mark.usefixtures("operator_release")
def test_one_replica_leads_and_a_standby_takes_over(
    kube_api: client.ApiClient, namespace: str, local_cluster: Layout, kubeconfig: Path
) -> None:
    with private_operator_installed(local_cluster, kubeconfig, namespace, replicas=2) as operator:
        _one_leads_and_a_standby_takes_over(kube_api, namespace, operator)


def _one_leads_and_a_standby_takes_over(
    kube_api: client.ApiClient, namespace: str, operator: PrivateOperator
) -> None:
    core = client.CoreV1Api(kube_api)
    leases = client.CoordinationV1Api(kube_api)

    def running_pods() -> list[client.V1Pod]:
        return [
            p
            for p in operator.pods(kube_api)
            if p.status.phase == "Running"
            and not p.metadata.deletion_timestamp
            and all(c.ready for c in p.status.container_statuses or [])
        ]

    pods = wait_for(
        "two ready operator replicas",
        lambda: running if len(running := running_pods()) == 2 else None,
        timeout=90,
    )
    holder = wait_for(
        "a lease holder among them",
        lambda: (
            (h := leases.read_namespaced_lease(operator.release, namespace).spec.holder_identity)
            in {p.metadata.name for p in pods}
            and h
        ),
        timeout=60,
    )

    for pod in pods:
        assert _get(f"http://{pod.status.pod_ip}:8081/healthz") == '{"status":"ok"}'
        metrics = _get(f"http://{pod.status.pod_ip}:9090/metrics")
        assert _leader_metric(metrics) == (1.0 if pod.metadata.name == holder else 0.0)

    create_mdep(
        kube_api,
        namespace,
        operator.mark(
            {
                "apiVersion": "modeldeploy.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "ha"},
                "spec": {
                    "model": {"uri": "http://10.244.0.1:1/x", "format": "onnx", "version": "1"},
                    "replicas": 1,
                },
            }
        ),
    )
    wait_for("the leader to reconcile", lambda: get_mdep(kube_api, namespace, "ha").get("status"))
    leader = next(p for p in pods if p.metadata.name == holder)
    assert "modeldeploy_operator_reconciles_total" in _get(f"http://{leader.status.pod_ip}:9090/metrics")

    # The old leader releases the Lease on SIGTERM; another replica (the standby, or the pod that
    # replaces the deleted one, whichever asks first) takes it.
    core.delete_namespaced_pod(holder, namespace)

    def new_holder() -> str | None:
        current = leases.read_namespaced_lease(operator.release, namespace).spec.holder_identity
        alive = {p.metadata.name for p in running_pods()}
        return current if current and current != holder and current in alive else None

    wait_for("another replica to take the lease", new_holder, timeout=60)


# --- a paused leader, on a private control plane ----------------------------------------------------

WRITES = {"create", "update", "patch", "delete", "deletecollection"}
POD_NAME = "authentication.kubernetes.io/pod-name"  # user.extra of a pod-bound token (k8s.io/apiserver)


def _when(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _writes(events: list[dict[str, Any]], pod: str) -> list[dict[str, Any]]:
    """The writes `pod`'s token made, with the time the API server received each, in that order."""
    found = [
        e for e in events if e.get("verb") in WRITES and (e["user"].get("extra") or {}).get(POD_NAME) == [pod]
    ]
    return sorted(found, key=lambda e: e["requestReceivedTimestamp"])


def _what(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    return (
        f"{event['verb']} {ref.get('resource')}/{ref.get('name', '')} at {event['requestReceivedTimestamp']}"
    )


def _replica_pod(name: str) -> dict[str, Any]:
    """A pod to bind a replica's token to (on the kwok node: it never runs anything)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": OPERATOR,
            "automountServiceAccountToken": False,
            "containers": [{"name": "operator", "image": "modeldeploy/operator:unused"}],
            **KWOK,
        },
    }


@pytest.mark.private_control_plane
@pytest.mark.slow
def test_a_paused_leader_is_replaced_and_writes_nothing_after_it_lost_the_lease(plane: Plane) -> None:
    docs = helm_template()
    env = operator_env(docs)
    duration = float(env["MODELDEPLOY_OPERATOR_LEASE_DURATION_SECONDS"])
    renew = float(env["MODELDEPLOY_OPERATOR_LEASE_RENEW_SECONDS"])
    install(plane, docs)
    core = client.CoreV1Api(plane.api)
    # Names of this run's own: the control plane is the session's (tests/support/private_operator.py).
    one_name, two_name = (f"{n}-{uuid.uuid4().hex[:5]}" for n in ("one", "two"))
    pods = {name: core.create_namespaced_pod(SYSTEM, _replica_pod(name)) for name in (one_name, two_name)}
    namespace = plane.namespace("ha")
    try:
        events, log, stopped_at, took_over, paused, alive = _pause_the_leader(
            plane, docs, pods, namespace, one_name, two_name
        )
    finally:
        plane.drop_namespace(namespace)
        for name in pods:
            core.delete_namespaced_pod(name, SYSTEM)
    one_writes, two_writes = _writes(events, one_name), _writes(events, two_name)

    assert two_writes, "the new leader wrote nothing"
    first = two_writes[0]
    late = [e for e in one_writes if e["requestReceivedTimestamp"] >= first["requestReceivedTimestamp"]]
    after_stop = [e for e in one_writes if _when(e["requestReceivedTimestamp"]) >= stopped_at]
    fenced = log.count("no longer holds the leader lease")
    print(
        f"\nFIGURE leader paused {paused:.1f}s (lease {duration:.0f}s, renew {renew:.0f}s): standby took "
        f"over {took_over:.1f}s after SIGSTOP; new leader's first write {_what(first)}; old leader's writes "
        f"{len(one_writes)} before, {len(late)} after it ({len(after_stop)} after SIGSTOP); old leader's "
        f"writes refused by its fence: {fenced}; it stepped down and is still running: {alive}",
        flush=True,
    )
    assert late == [], [_what(e) for e in late]
    # A SIGSTOPped process writes nothing; a request it had sent just before can still be received
    # after the stop on a loaded machine (the CI run of 2026-12-05: its Lease renewal, received after
    # SIGSTOP and 16 s before the new leader's first write). At most that one renewal, then.
    assert len(after_stop) <= 1, [_what(e) for e in after_stop]
    assert all(_what(e).startswith("update leases/") for e in after_stop), [_what(e) for e in after_stop]
    assert first["objectRef"]["resource"] == "leases"  # it took the Lease before anything else
    assert took_over <= duration + 2 * renew + 5, took_over
    assert alive  # stepped down, waiting for the Lease again: no exit, no container restart
    assert "lost leadership" in log
    assert "stepped down after losing leadership" in log


def _pause_the_leader(
    plane: Plane,
    docs: list[dict[str, Any]],
    pods: dict[str, client.V1Pod],
    namespace: str,
    one_name: str,
    two_name: str,
) -> tuple[list[dict[str, Any]], str, float, float, float, bool]:
    """Replica one leads and reconciles a ModelDeployment; replica two waits; one is SIGSTOPped until
    two has taken over and acted on a spec change, then SIGCONTed. Returns the audit events, one's
    log, when it was stopped, how long until two held the Lease, how long it was paused, and whether
    one was still running after it stepped down (a few seconds of waiting as a standby later)."""
    custom = client.CustomObjectsApi(plane.api)

    def holder() -> str | None:
        return lease_holder(plane.api)

    def status() -> dict[str, Any]:
        return mdep_status(plane.api, namespace, "ha") or {}

    with operator_running(plane, docs, one_name, pods[one_name]) as one:
        wait_for("replica one to lead", lambda: holder() == one_name, WAIT)
        with operator_running(plane, docs, two_name, pods[two_name], keep_lease=True) as two:
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelDeployment",
                    "metadata": {"name": "ha"},
                    "spec": {
                        "model": {
                            "uri": "http://127.0.0.1:9/models/m/v1",
                            "format": "onnx",
                            "version": "1",
                        },
                        "replicas": 1,
                        "pods": {"serving": KWOK, "router": KWOK},
                    },
                },
            )
            wait_for("the leader to make it Ready", lambda: status().get("phase") == "Ready", WAIT)
            assert two.alive()
            assert holder() == one_name
            assert _writes(plane.audit_events(), two_name) == [], "the standby wrote"

            def idle() -> bool:
                # Paused between two writes, not inside one: no write but the Lease's for a while.
                others = [
                    e
                    for e in _writes(plane.audit_events(), one_name)
                    if (e.get("objectRef") or {}).get("resource") != "leases"
                ]
                return bool(others) and time.time() - _when(others[-1]["requestReceivedTimestamp"]) > 3

            wait_for("the leader idle", idle, WAIT)

            assert one.proc is not None
            os.kill(one.proc.pid, signal.SIGSTOP)
            stopped_at = time.time()
            try:
                # Work for both: the new leader acts on it; the old one has it queued on its watch.
                custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, "ha", {"spec": {"replicas": 2}}
                )
                wait_for("replica two to take over", lambda: holder() == two_name, WAIT, interval=0.1)
                took_over = time.time() - stopped_at
                serving = client.AppsV1Api(plane.api)

                def scaled() -> bool:
                    items = serving.list_namespaced_deployment(
                        namespace, label_selector="modeldeploy.io/deployment=ha"
                    ).items
                    return any((d.spec.replicas or 0) == 2 for d in items)

                wait_for("the new leader to act on the change", scaled, WAIT)
                paused = time.time() - stopped_at
            finally:
                os.kill(one.proc.pid, signal.SIGCONT)

            log_path = plane.work / f"operator-{one_name}.log"

            def stepped_down() -> bool:
                return "stepped down after losing leadership" in log_path.read_text(errors="replace")

            wait_for("the old leader to step down after SIGCONT", stepped_down, 60)
            # As a standby now, asking every second: it must not take the Lease back from two, nor
            # write anything (a spec change, and a status to match, were waiting for it).
            seen_at = time.time()

            def asked_again() -> bool:
                gets = [
                    e
                    for e in plane.audit_events()
                    if e.get("verb") == "get"
                    and (e.get("objectRef") or {}).get("resource") == "leases"
                    and (e["user"].get("extra") or {}).get(POD_NAME) == [one_name]
                    and _when(e["requestReceivedTimestamp"]) > seen_at
                ]
                return len(gets) >= 3

            wait_for("the old leader to ask for the Lease again (three times)", asked_again, 60)
            alive = one.alive()
            assert holder() == two_name
            events = plane.audit_events()
            log = log_path.read_text(errors="replace")
    return events, log, stopped_at, took_over, paused, alive
