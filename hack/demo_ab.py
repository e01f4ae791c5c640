"""The A/B part of `make demo`: two churn models on half the users each, predictions now and the truth
later, judged per arm by the label joiner (spec.effectiveness).

1. One request per customer of the golden set (1,000 labelled rows), each from its own user
   (sticky by X-User-Id), keeping the request id the router answers with, as a caller would.
2. "Weeks later" the truth arrives: the labels through the router's feedback route, keyed by those
   request ids, in batches. A label whose prediction record has not reached the joiner yet is answered
   `unknown_request` and sent again (as a caller would, after a moment).
3. The status view (`kubectl modeldeploy status`) once the joiner calls an A/B verdict other than
   Inconclusive, printing what it waits for meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BATCH = 250
Rows = list[tuple[list[float | None], int]]


def golden(path: Path) -> Rows:
    """(features, truth) of the golden set's rows: `retained` is the truth column."""
    with path.open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        truth = header.index("retained")
        return [
            ([float(v) if v else None for i, v in enumerate(row) if i != truth], int(float(row[truth])))
            for row in reader
        ]


def predict(http: httpx.Client, base: str, name: str, rows: Rows) -> dict[str, int]:
    """request id -> truth, one request per row; prints how the users were split."""
    truths: dict[str, int] = {}
    arms: dict[str, int] = {}
    for i, (features, truth) in enumerate(rows):
        body = {
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, len(features)], "data": features}]
        }
        user = {"X-User-Id": f"customer-{i}"}
        answer = http.post(f"{base}/v2/models/{name}/infer", json=body, headers=user)
        answer.raise_for_status()
        truths[answer.headers["x-request-id"]] = truth
        arm = f"{answer.headers['x-modeldeploy-variant']} (v{answer.headers['x-modeldeploy-model-version']})"
        arms[arm] = arms.get(arm, 0) + 1
    print("  answered by: " + ", ".join(f"{arm}: {n}" for arm, n in sorted(arms.items())), flush=True)
    return truths


def send_labels(http: httpx.Client, base: str, name: str, truths: dict[str, int]) -> dict[str, int]:
    """The labels, in batches; the ones the joiner cannot match yet again, for up to two minutes."""
    pending = dict(truths)
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while pending:
        retry: dict[str, int] = {}
        items = list(pending.items())
        for start in range(0, len(items), BATCH):
            labels = [{"request_id": rid, "label": truth} for rid, truth in items[start : start + BATCH]]
            answer = http.post(f"{base}/v2/models/{name}/feedback", json={"labels": labels}, timeout=60)
            while answer.status_code in (502, 503, 504) and time.monotonic() < deadline:
                # The joiner starting, or its store not reachable yet: the router says so.
                print(f"  the joiner cannot take labels yet: {answer.json().get('code', answer.status_code)}")
                time.sleep(2)
                answer = http.post(f"{base}/v2/models/{name}/feedback", json={"labels": labels}, timeout=60)
            answer.raise_for_status()
            for result in answer.json()["results"]:
                if result["status"] == "unknown_request" and time.monotonic() < deadline:
                    retry[result["request_id"]] = pending[result["request_id"]]
                else:
                    outcomes[result["status"]] = outcomes.get(result["status"], 0) + 1
        if retry:
            print(f"  {len(retry)} labels arrived before their prediction's record: sent again", flush=True)
            time.sleep(2)
        pending = retry
    print("  labels: " + ", ".join(f"{status} {n}" for status, n in sorted(outcomes.items())), flush=True)
    return outcomes


def verdict_lines(view: str) -> list[str]:
    return [line.strip() for line in view.splitlines() if line.strip().startswith("A/B ")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the Service's URL (kubectl port-forward)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--golden", type=Path, required=True, help="the churn example's data/golden.csv")
    args = parser.parse_args()
    base = args.url.rstrip("/")
    rows = golden(args.golden)
    with httpx.Client(timeout=15) as http:
        print(f"\nPredictions for {len(rows)} customers, one request each:", flush=True)
        truths = predict(http, base, args.name, rows)
        print("\nWeeks later, the truth (did the customer stay?) through the feedback route:", flush=True)
        outcomes = send_labels(http, base, args.name, truths)
    view, lines = "", []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        view = subprocess.run(
            ["kubectl-modeldeploy", "-n", args.namespace, "status", args.name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        lines = verdict_lines(view)
        if any("Inconclusive" not in line for line in lines):
            break
        waiting = "; ".join(lines) or "no A/B line yet"
        print(f"  waiting for the joiner's A/B verdict: {waiting}", flush=True)
        time.sleep(5)
    print(view, flush=True)
    verdicts: list[Any] = [line for line in lines if "Inconclusive" not in line]
    print("=> A/B: " + (verdicts[0] if verdicts else "no verdict within 3 minutes"), flush=True)
    return 0 if verdicts and outcomes.get("joined") == len(truths) else 1


if __name__ == "__main__":
    sys.exit(main())
