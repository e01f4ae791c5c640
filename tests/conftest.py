"""Shared pytest wiring: the local-cluster fixtures live in the test-cluster harness package."""

pytest_plugins = ["modeldeploy_testcluster.pytest_plugin"]
