"""modeldeploy_testcluster."""
