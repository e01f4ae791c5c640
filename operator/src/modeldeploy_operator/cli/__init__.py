"""kubectl-modeldeploy: the kubectl plugin (status, promote, abort, pause, resume, rollback, history)."""
