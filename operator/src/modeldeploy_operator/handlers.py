"""kopf handlers: thin wiring of the domain and the Kubernetes client layer."""
