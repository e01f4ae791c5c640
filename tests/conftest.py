"""Shared pytest wiring: the local-cluster fixtures live in the test-cluster harness package, the
operator, model-store and churn-bundle fixtures in tests/support."""

pytest_plugins = ["modeldeploy_testcluster.pytest_plugin", "operator_fixtures"]
