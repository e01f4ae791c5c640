"""The process-backed node: a small kubelet stand-in that runs modeldeploy's own images as local processes.

Test infrastructure only, never part of a product image. For each pod bound to its Node whose image it
knows (see `images.py`), it runs the container's command as a process inside the harness's network
namespace, bound to the pod's own IP, with the pod's volumes bind-mounted in a private mount namespace
(so the ServiceAccount token lands where in-cluster clients look for it), and reports phase, IPs and
readiness (from the pod's own probes) back to the API server.
"""
