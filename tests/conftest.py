"""Shared pytest wiring: the local-cluster fixtures live in the test-cluster harness package, the
operator, model-store and churn-bundle fixtures in tests/support."""

import pytest

pytest_plugins = ["modeldeploy_testcluster.pytest_plugin", "operator_fixtures"]

# Session fixtures that start a server or build something big, by the xdist group their tests share
# (`make test` runs pytest-xdist with --dist loadgroup): each group runs on one worker, so the server
# starts once per session, as without xdist. Everything else spreads over the workers.
SHARED_SESSION_FIXTURES = {
    "kafka": "kafka",
    "local_postgres": "postgres",
    "images": "images",
}


def _xdist_group(item: pytest.Item) -> str | None:
    # One cluster per machine (the harness holds a lock for the session): every test of the shared
    # cluster, the ones that restart it included, runs on the same worker, in the order sorted below.
    if "local_cluster" in getattr(item, "fixturenames", ()):
        return "cluster"
    # Cluster tests on a control plane of their own (RBAC, scale): beside the shared cluster's, one at
    # a time (each starts an etcd and a kube-apiserver on 2 cores).
    if item.get_closest_marker("cluster") is not None:
        return "private-control-plane"
    for fixture, group in SHARED_SESSION_FIXTURES.items():
        if fixture in getattr(item, "fixturenames", ()):
            return group
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that tear the local cluster down and up again run last: session fixtures (the installed
    operator, for one) would not survive them. Tests sharing a session server get one xdist group."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)
    for item in items:
        group = _xdist_group(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


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
