"""Shared pytest wiring: the local-cluster fixtures live in the test-cluster harness package, the
operator, model-store and churn-bundle fixtures in tests/support."""

pytest_plugins = ["modeldeploy_testcluster.pytest_plugin", "operator_fixtures"]


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """Tests that tear the local cluster down and up again run last: session fixtures (the installed
    operator, for one) would not survive them."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_cluster") is not None)
