"""Shared pytest wiring: the local-cluster fixtures live in the test-cluster harness package, the
operator, model-store and churn-bundle fixtures in tests/support (the private control plane's in
tests/support/private_operator.py)."""

import json
import os
import time
from pathlib import Path

import pytest

# The harness plugin's own predicates, so "a cluster test" means the same in both places; imported
# here, before pytest loads it as a plugin, so it must be registered for assertion rewriting first.
pytest.register_assert_rewrite("modeldeploy_testcluster.pytest_plugin")
from modeldeploy_testcluster.pytest_plugin import is_cluster_test, restart_level, restarts  # noqa: E402

pytest_plugins = ["modeldeploy_testcluster.pytest_plugin", "operator_fixtures", "private_operator"]

REPO = Path(__file__).resolve().parent.parent

# Session fixtures that start a server or build something big, by the xdist group their tests share
# (`make test` runs pytest-xdist with --dist loadgroup): each group runs on one worker, so the server
# starts once per session, as without xdist. Everything else spreads over the workers. In this order
# after the cluster's streams: the longest first.
SHARED_SESSION_FIXTURES = {
    "images": "images",
    "kafka": "kafka",
    "local_postgres": "postgres",
}
GROUP_ORDER = ["private-control-plane", *SHARED_SESSION_FIXTURES.values()]


CLUSTER_STREAMS = int(os.environ.get("MODELDEPLOY_CLUSTER_STREAMS", "3"))
"""xdist groups the shared cluster's tests are spread over: they run at once on the one cluster, each in
a namespace of its own, under the readers-writer lock of modeldeploy_testcluster.pytest_plugin (tests
marked cluster_exclusive run alone: in the 23.3-min run of 2026-12-03 they were 355 s of the cluster
streams' 1,292, and one cluster test was running alone for 539 s of them; the ones that restarted,
scaled down or re-permissioned the shared operator now do it to an operator of their own,
operator_fixtures.PrivateOperator, beside the others).
One stream was the whole suite's critical path: 33 of its 35 min.
Two were still the critical path of a warm CI run (2026-12-03, 4 workers): both ended at about 1,870 s,
the other two workers at 1,475 s, with the machine's 2 cores on average half idle (user + sys 35 min of
CPU in 33 min): the cluster's tests mostly wait (rollout steps, analysis intervals, pods starting)."""

# Seconds per test file on the cluster, from a CI run's timeline (hack/timeline.py; setup and teardown
# included, the tests that restart the cluster left out: they run in a group of their own, below), for
# splitting the files into streams of about equal length. The stream's first test also pays for the
# cluster and the operator (a minute warm), whichever file that is. A file not listed counts 60 s.
# Warm CI run of 2026-12-06 on 55c14d1 (3 streams, 5 workers, 16.7 min): the streams were busy 812,
# 738 and 594 s with the table before (2026-12-03's), and the one holding the restart tests waited
# 257 s for the others before them.
CLUSTER_FILE_SECONDS = {
    "tests/e2e/test_rollout_e2e.py": 264,
    "tests/e2e/test_stream_e2e.py": 220,  # now about 35 s less: the pod-kill test's session timeout 10 s
    "tests/e2e/test_demo_e2e.py": 211,
    "tests/integration/operator/test_operator_reconcile.py": 174,
    "tests/e2e/test_mirror_e2e.py": 131,
    "tests/e2e/test_faults_e2e.py": 116,  # and its etcd restart, 46 s, in the restart group
    "tests/e2e/test_effectiveness_verdicts_e2e.py": 95,
    "tests/e2e/test_network_policy_e2e.py": 94,
    "tests/e2e/test_prometheus_analysis_e2e.py": 89,
    "tests/e2e/test_preflight_e2e.py": 82,
    "tests/e2e/test_effectiveness_e2e.py": 82,
    "tests/e2e/test_router_e2e.py": 78,
    "tests/e2e/test_examples_e2e.py": 64,
    "tests/e2e/test_rollback_window_e2e.py": 63,
    "tests/e2e/test_plugin_e2e.py": 59,
    "tests/e2e/test_prediction_log_pii_e2e.py": 38,
    "tests/e2e/test_model_version_e2e.py": 37,
    "tests/integration/operator/test_operator_pod_settings_cluster.py": 30,
    "tests/integration/cluster/test_harness.py": 28,  # and its teardown test, 21 s, in the restart group
    "tests/e2e/test_model_store_pvc_e2e.py": 26,
    "tests/integration/operator/test_operator_ha.py": 21,
    "tests/integration/operator/test_operator_out_of_cluster.py": 17,
    "tests/integration/cluster/test_real_node.py": 13,  # and its teardown test, 16 s, in the restart group
    "tests/integration/operator/test_operator_serving.py": 13,
    "tests/integration/operator/test_operator_monitoring.py": 11,
    "tests/integration/operator/test_operator_gateway.py": 5,
    # Skipped unless asked for (and then 0 s: counted at 400, it left its stream 400 s short in every
    # run, as in the one above). The install walk alone (2026-12-04, four runs): 281-503 s.
    "tests/e2e/test_install_walk_e2e.py": 400 if os.environ.get("MODELDEPLOY_WALK_TEST") == "1" else 0,
    "tests/integration/operator/test_operator_idle_cost.py": 5,
}

RESTART_GROUP = "cluster-restarts"
"""The tests that restart or tear down the shared cluster: they wait until every other cluster test is
done (modeldeploy_testcluster.pytest_plugin), so they are one group handed out last, to whichever
worker is free by then. In a stream of their own file, they kept that stream's worker waiting (257 s
of the 16.7-min run above) while the other workers still had tests it could have run."""


def _cluster_streams(items: list[pytest.Item]) -> dict[str, str]:
    """Test file -> xdist group. Whole files, so module fixtures (a Prometheus on the one address the
    operator may query, a Kafka broker) live in one stream; longest first onto the shortest stream."""
    files = sorted({str(i.path.relative_to(REPO)) for i in items if is_cluster_test(i) and not restarts(i)})
    streams = [f"cluster-{n}" if n else "cluster" for n in range(max(1, CLUSTER_STREAMS))]
    load = dict.fromkeys(streams, 0)
    assigned = {}
    for file in sorted(files, key=lambda f: -CLUSTER_FILE_SECONDS.get(f, 60)):
        stream = min(streams, key=lambda s: load[s])
        assigned[file] = stream
        load[stream] += CLUSTER_FILE_SECONDS.get(file, 60)
    return assigned


def _xdist_group(item: pytest.Item, streams: dict[str, str]) -> str | None:
    # One cluster per machine (the harness holds a lock for the session): its tests run in a few
    # streams; the ones that restart it in RESTART_GROUP, after all of them
    # (modeldeploy_testcluster.pytest_plugin).
    if is_cluster_test(item):
        return RESTART_GROUP if restarts(item) else streams[str(item.path.relative_to(REPO))]
    # Cluster tests on a control plane of their own (RBAC, scale): beside the shared cluster's, one at
    # a time (each starts an etcd and a kube-apiserver on 2 cores).
    if item.get_closest_marker("cluster") is not None:
        return "private-control-plane"
    for fixture, group in SHARED_SESSION_FIXTURES.items():
        if fixture in getattr(item, "fixturenames", ()):
            return group
    # An integration module's tests share its module fixtures (a model server, a router, a trained
    # bundle: 10-45 s each under load): spread test by test, every worker started its own.
    path = item.path.relative_to(REPO)
    if path.parts[:2] == ("tests", "integration"):
        return f"module:{path}"
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests sharing a session server get one xdist group. Groups come first, the cluster's streams
    before the others (`make test` passes --no-loadscope-reorder: xdist hands out groups in this
    order, and a worker gets another only when its current one is nearly done, so each stream starts
    at once on a worker of its own). Tests that restart or tear down the local cluster are
    RESTART_GROUP, last of all, by restart level: session fixtures (the installed operator, for one)
    would not survive a teardown."""
    streams = _cluster_streams(items)
    groups = {}
    for item in items:
        group = _xdist_group(item, streams)
        groups[item.nodeid] = group
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))

    stream_order = sorted(set(streams.values()))

    def rank(item: pytest.Item) -> tuple[int, int, int]:
        group = groups[item.nodeid]
        if group in stream_order:
            return 0, stream_order.index(group), 0
        if group in GROUP_ORDER:
            return 1 + GROUP_ORDER.index(group), 0, 0
        if group == RESTART_GROUP:  # after everything: by then the streams are (nearly) done
            return 3 + len(GROUP_ORDER), 0, restart_level(item)
        # Modules, then single tests: the small pieces last, to even out the workers' ends.
        return 1 + len(GROUP_ORDER) + (group is None), 0, 0

    items.sort(key=rank)


@pytest.hookimpl(trylast=True)  # after xdist's hook has named each grouped test "<id>@<group>"
def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, fail fast when the groups were not applied: the shared cluster's tests
    would then spread over workers that wait on each other's lock (seen with pytest 9.2, which xdist
    3.8 cannot rename tests in)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(f"pytest-xdist did not group {len(lost)} tests, e.g. {lost[0]}")


# Where the wall time goes, per worker: every test's start and end (setup to teardown) on the worker
# that ran it, appended to $MODELDEPLOY_TEST_TIMELINE (one JSON line per test; .ci/run sets it and
# prints hack/timeline.py's summary). --durations gives each test's length, not which worker waited
# for which: the warm budget (20 min) is decided by the busiest worker's sum, not by the total.
_timeline = {"file": os.environ.get("MODELDEPLOY_TEST_TIMELINE")}
_started: dict[str, float] = {}


@pytest.hookimpl(trylast=True)  # after xdist registered its controller ("dsession")
def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("dsession"):
        _timeline["file"] = None  # the xdist controller hears of every test too: its workers write the lines


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    if _timeline["file"]:
        _started[nodeid] = time.time()


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    path = _timeline["file"]
    if path and nodeid in _started:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        line = {"worker": worker, "test": nodeid, "start": _started.pop(nodeid), "end": time.time()}
        with open(path, "a") as handle:  # one short write per line: appends do not interleave
            handle.write(json.dumps(line) + "\n")
