"""Send real predictions to a ModelDeployment through its Service and print them with the answering version.

The Service is reached the way a user of a remote cluster reaches it: `kubectl port-forward` on
127.0.0.1 (hack/demo.sh starts it and passes the local URL here).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the Service's URL, e.g. http://127.0.0.1:PORT")
    parser.add_argument("--name", required=True)
    parser.add_argument("--rows", required=True, help="CSV of feature rows (a header line first)")
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    base = args.url.rstrip("/")

    # Ready is reported from pod readiness; the forwarded Service answers once its pod is reached.
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print(f"{base} did not answer /v2/health/ready within 60 s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    with open(args.rows, newline="") as handle:
        reader = csv.reader(handle)
        features = next(reader)
        rows = [
            [float(v) if v else math.nan for v in row]
            for _, row in zip(range(args.count), reader, strict=False)
        ]

    with httpx.Client(timeout=10) as http:
        for i, row in enumerate(rows):
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
            if i == 0:
                print("the first one, as you would send it:")
                print(
                    f"  curl -s {base}/v2/models/{args.name}/infer -H 'content-type: application/json' "
                    f"-d {shlex.quote(json.dumps(body))}"
                )
            response = http.post(f"{base}/v2/models/{args.name}/infer", json=body)
            response.raise_for_status()
            answer = response.json()
            outputs = {o["name"]: o["data"] for o in answer["outputs"]}
            p_retained = outputs["probabilities"][1]
            print(
                f"row {i}: P(retained)={p_retained:.3f} label={outputs['label'][0]}  "
                f"model={answer['model_name']} version={answer.get('model_version')}"
            )
    print(f"features: {', '.join(features)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
