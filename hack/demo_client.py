"""Send real predictions to a ModelDeployment's serving pods and print them with the answering version.

There is no kube-proxy on the local cluster, so, like the built-in router, this client finds the ready
pod addresses behind the ModelDeployment's stable Service from its EndpointSlices.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time

import httpx
from kubernetes import client, config


def endpoints(namespace: str, service: str) -> list[str]:
    config.load_kube_config()
    slices = (
        client.DiscoveryV1Api()
        .list_namespaced_endpoint_slice(namespace, label_selector=f"kubernetes.io/service-name={service}")
        .items
    )
    found = []
    for endpoint_slice in slices:
        port = endpoint_slice.ports[0].port
        for endpoint in endpoint_slice.endpoints or []:
            if endpoint.conditions.ready:
                found += [f"http://{address}:{port}" for address in endpoint.addresses]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--rows", required=True, help="CSV of feature rows (a header line first)")
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()

    # Ready is reported from pod readiness; the EndpointSlice follows a moment later.
    deadline = time.monotonic() + 30
    while not (backends := endpoints(args.namespace, args.name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not backends:
        print(f"no ready endpoint behind Service {args.namespace}/{args.name}", file=sys.stderr)
        return 1
    with open(args.rows, newline="") as handle:
        reader = csv.reader(handle)
        features = next(reader)
        rows = [
            [float(v) if v else math.nan for v in row]
            for _, row in zip(range(args.count), reader, strict=False)
        ]

    print(f"{len(backends)} ready pod(s): {', '.join(backends)}")
    with httpx.Client(timeout=10) as http:
        for i, row in enumerate(rows):
            base = backends[i % len(backends)]
            body = {
                "id": f"demo-{i}",
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "FP64",
                        "shape": [1, len(row)],
                        "data": [None if math.isnan(v) else v for v in row],
                    }
                ],
            }
            response = http.post(f"{base}/v2/models/{args.name}/infer", json=body)
            response.raise_for_status()
            answer = response.json()
            outputs = {o["name"]: o["data"] for o in answer["outputs"]}
            p_retained = outputs["probabilities"][1]
            print(
                f"row {i}: P(retained)={p_retained:.3f} label={outputs['label'][0]}  "
                f"model={answer['model_name']} version={answer.get('model_version')}  via {base}"
            )
    print(f"features: {', '.join(features)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
