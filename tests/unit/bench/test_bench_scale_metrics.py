"""bench/operator/scale.py: what it keeps per phase of the operator's histograms (the buckets of queue
wait, pass, garbage collection and request times) and of the API server's own time for the
controller's requests; from Prometheus text, no cluster."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from script_module import script_module

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return script_module("modeldeploy_scale_bench", REPO / "bench" / "operator" / "scale.py")


OPERATOR = """\
# TYPE modeldeploy_operator_gc_pause_seconds histogram
modeldeploy_operator_gc_pause_seconds_bucket{generation="2",le="0.25"} 1.0
modeldeploy_operator_gc_pause_seconds_bucket{generation="2",le="0.3"} 1.0
modeldeploy_operator_gc_pause_seconds_bucket{generation="2",le="+Inf"} 3.0
modeldeploy_operator_gc_pause_seconds_count{generation="2"} 3.0
modeldeploy_operator_gc_pause_seconds_sum{generation="2"} 1.5
# TYPE modeldeploy_operator_api_request_duration_seconds histogram
modeldeploy_operator_api_request_duration_seconds_bucket{verb="patch",le="0.1"} 7.0
modeldeploy_operator_api_request_duration_seconds_count{verb="patch"} 9.0
modeldeploy_operator_api_request_duration_seconds_sum{verb="patch"} 0.8
"""


def test_the_operators_histograms_are_kept_by_bound_generation_and_verb(bench: ModuleType) -> None:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(OPERATOR):
        for sample in family.samples:
            bench._histogram_sample(sample.name, sample.labels, sample.value, found)
    assert found == {
        "gc2_pause_seconds_le_0.25": 1.0,  # (0.3 is not one of the kept bounds, nor +Inf)
        "gc2_pause_seconds_count": 3.0,
        "gc2_pause_seconds_sum": 1.5,
        "api_patch_duration_seconds_le_0.1": 7.0,
        "api_patch_duration_seconds_count": 9.0,
        "api_patch_duration_seconds_sum": 0.8,
    }


SERVER = """\
# TYPE apiserver_flowcontrol_request_execution_seconds histogram
apiserver_flowcontrol_request_execution_seconds_count{flow_schema="scale-bench-op-write",type="m"} 4
apiserver_flowcontrol_request_execution_seconds_sum{flow_schema="scale-bench-op-write",type="m"} 0.2
apiserver_flowcontrol_request_execution_seconds_count{flow_schema="scale-bench-argo-write",type="m"} 9
apiserver_flowcontrol_request_execution_seconds_sum{flow_schema="scale-bench-argo-write",type="m"} 9
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_count{verb="APPLY",resource="deployments"} 2
apiserver_request_duration_seconds_sum{verb="APPLY",resource="deployments"} 0.1
apiserver_request_duration_seconds_count{verb="APPLY",resource="services"} 1
apiserver_request_duration_seconds_sum{verb="APPLY",resource="services"} 0.05
apiserver_request_duration_seconds_count{verb="PUT",resource="deployments",subresource="status"} 4
apiserver_request_duration_seconds_sum{verb="PUT",resource="deployments",subresource="status"} 0.08
apiserver_request_duration_seconds_count{verb="WATCH",resource="pods"} 5
"""


def test_the_api_servers_time_is_kept_for_the_controllers_classes_and_by_verb(bench: ModuleType) -> None:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(SERVER):
        if family.name in bench._SERVER_TIMES:
            bench._server_time(family, "scale-bench-op-", counts)
    assert counts == pytest.approx(
        {
            "apf_execution_write_n": 4,
            "apf_execution_write_s": 0.2,  # the other controller's class aside
            "all_clients_APPLY_n": 3,
            "all_clients_APPLY_s": 0.15,  # (watches aside: they last as long as they are open)
            "all_clients_PUT_n": 4,
            "all_clients_PUT_s": 0.08,
            "by_resource_APPLY_deployments_n": 2,  # and by resource, with its subresource
            "by_resource_APPLY_deployments_s": 0.1,
            "by_resource_APPLY_services_n": 1,
            "by_resource_APPLY_services_s": 0.05,
            "by_resource_PUT_deployments/status_n": 4,
            "by_resource_PUT_deployments/status_s": 0.08,
        }
    )


class _FakeProcess:
    def __init__(self, cpu: float, alive: bool = True) -> None:
        self.cpu, self.running = cpu, alive

    def alive(self) -> bool:
        return self.running

    def cpu_seconds(self) -> float:
        return self.cpu


def test_each_phase_has_the_cpu_of_every_running_process(bench: ModuleType) -> None:
    from types import SimpleNamespace

    counts = SimpleNamespace(
        processes={"kube-apiserver": _FakeProcess(12.5), "kwok": _FakeProcess(3.0, alive=False)}
    )
    side = SimpleNamespace(process=_FakeProcess(4.25))
    found = bench.cpu_by_process(side, counts)
    assert found["kube-apiserver"] == 12.5
    assert found["controller"] == 4.25
    assert "kwok" not in found  # a stopped process has no CPU to read (its /proc entry is gone)
    assert found["bench"] >= 0.0  # this process's own, from os.times()
    # A phase's figure is the difference of two readings, as for the request counts.
    assert bench.delta(found, {**found, "controller": 6.0})["controller"] == pytest.approx(1.75)
