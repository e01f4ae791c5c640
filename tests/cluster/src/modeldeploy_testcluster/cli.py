"""`modeldeploy-cluster up|down|status|env`: the local control plane from the command line."""

from __future__ import annotations

import argparse
import sys

from modeldeploy_testcluster import controlplane
from modeldeploy_testcluster.layout import REAL_NODE_TAINT, binaries_dir, default_layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modeldeploy-cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    layout = default_layout()
    if args.command == "up":
        try:
            controlplane.up(layout)
        except controlplane.ClusterError as error:
            print(f"cluster-up failed: {error}", file=sys.stderr)
            return 1
        default_note = (
            "the default node for ordinary pods"
            if layout.real_node_default
            else f"tainted {REAL_NODE_TAINT['key']}: only pods that tolerate it"
        )
        print(f"""The local cluster is up (Kubernetes {controlplane.KUBE_VERSION}, RBAC on).
  export KUBECONFIG={layout.admin_kubeconfig}
  export PATH={binaries_dir()}:$PATH   # kubectl, helm
  kubectl get nodes
Pods on `{layout.process_node_name}` run as local processes; their logs are in {layout.pods_dir}/<pod-uid>/.
`{layout.real_node_name}` runs pods under kubelet, containerd and runc ({default_note}); it pulls from
the local registry {layout.registry} (push with `buildah push --tls-verify=false IMAGE docker://{layout.registry}/NAME:TAG`).
Logs: {layout.logs_dir}/{{kubelet,containerd,kube-proxy,registry}}.log.
Stop it with `make cluster-down`.""")
        return 0
    if args.command == "down":
        controlplane.down(layout)
        print("local cluster stopped and its state removed")
        return 0
    if args.command == "env":
        print(f"export KUBECONFIG={layout.admin_kubeconfig}")
        print(f"export PATH={binaries_dir()}:$PATH")
        return 0
    healthy = controlplane.is_healthy(layout)
    print("up" if healthy else "down")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
