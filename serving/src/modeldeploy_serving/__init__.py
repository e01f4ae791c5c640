"""modeldeploy_serving."""
