"""modeldeploy_operator."""
