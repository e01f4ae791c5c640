"""kubectl-modeldeploy: the kubectl plugin of modeldeploy (installable on its own: no operator code)."""
