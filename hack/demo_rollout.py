"""The rollout part of `make demo`: live traffic through the router while v2 is rolled out as a canary
(promoted step by step) and then the bad v3 (rolled back by the analysis), printed as it happens."""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"


ROWS_PER_REQUEST = 4


class LiveTraffic(threading.Thread):
    """~40 requests/s (of ROWS_PER_REQUEST rows) through the router's Service (kubectl port-forward),
    each from one of 500 users (sticky by X-User-Id)."""

    def __init__(self, url: str, name: str, rows: list[list[float | None]]) -> None:
        super().__init__(daemon=True)
        self.url, self.name, self.rows = url.rstrip("/"), name, rows
        self.answers: collections.Counter[str] = collections.Counter()
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rng = random.Random(1)
        with httpx.Client(timeout=5) as http:
            while not self.stop.wait(0.025):
                # Four rows per request: the score-shift check needs 150 scores per side in an
                # 8 s interval, which 40 one-row requests/s missed on a loaded machine (the rollout
                # stayed Inconclusive; seen in CI, 2026-12-02).
                rows = [rng.choice(self.rows) for _ in range(ROWS_PER_REQUEST)]
                body = {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP64",
                            "shape": [len(rows), len(rows[0])],
                            "data": [v for row in rows for v in row],
                        }
                    ]
                }
                try:
                    answer = http.post(
                        f"{self.url}/v2/models/{self.name}/infer",
                        json=body,
                        headers={"X-User-Id": f"user-{rng.randrange(500)}"},
                    )
                except httpx.HTTPError:
                    self.failed += 1
                    continue
                if answer.status_code == 200:
                    self.answers[answer.headers.get("x-modeldeploy-model-version", "?")] += 1
                else:
                    self.failed += 1

    def window(self) -> str:
        total = sum(self.answers.values()) or 1
        shares = ", ".join(f"v{v}: {100 * n / total:.0f}%" for v, n in sorted(self.answers.items()))
        self.answers.clear()
        return shares or "no answers"


def status_line(status: dict[str, Any], traffic: LiveTraffic) -> str:
    checks = ", ".join(
        f"{c['name']}={(c.get('measurements') or [{}])[-1].get('value', 'n/a')!s:.6}({c.get('result', '-')})"
        for c in (status.get("analysis") or {}).get("checks", [])
    )
    step = status.get("currentStepIndex")
    line = (
        f"  phase={status.get('phase'):<11} step={'-' if step is None else step:<2} "
        f"canary weight={status.get('canaryWeight', 0):>3}%  answered by [{traffic.window()}]  {checks}"
    )
    return line + "".join(f"\n      waiting: {why}" for why in waiting_for(status))


def waiting_for(status: dict[str, Any]) -> list[str]:
    """What the rollout waits for, in the operator's words: the step (Progressing), and each check
    that is Inconclusive (e.g. "40 samples, fewer than the 150 needed")."""
    reasons = []
    progressing = next((c for c in status.get("conditions", []) if c.get("type") == "Progressing"), None)
    if progressing is not None and progressing.get("status") == "True" and status.get("canaryRevision"):
        reasons.append(progressing.get("message", ""))
    for check in (status.get("analysis") or {}).get("checks", []):
        latest = (check.get("measurements") or [{}])[-1]
        if latest.get("result") == "Inconclusive":
            reasons.append(f"{check['name']}: {latest.get('message', 'no data')}"[:160])
    return [r for r in reasons if r]


def roll_out(
    api: client.CustomObjectsApi,
    namespace: str,
    name: str,
    base: str,
    out: Path,
    version: str,
    traffic: LiveTraffic,
) -> dict[str, Any]:
    sha = hashlib.sha256((out / f"v{version}" / "manifest.json").read_bytes()).hexdigest()
    api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"spec": {"model": {"uri": f"{base}/v{version}", "version": version, "sha256": sha}}},
    )
    deadline = time.monotonic() + 300
    started = False
    while time.monotonic() < deadline:
        time.sleep(2)
        status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status", {})
        print(status_line(status, traffic), flush=True)
        started = started or bool(status.get("canaryRevision"))
        if status.get("aborted") or (started and not status.get("canaryRevision")):
            return dict(status)
    raise SystemExit(f"rollout of v{version} did not finish in 5 minutes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the Service's URL (kubectl port-forward)")
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--model-base", required=True)
    parser.add_argument("--bundles", type=Path, required=True)
    args = parser.parse_args()
    config.load_kube_config()
    with (args.bundles / "data" / "traffic_normal.csv").open() as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [[float(v) if v else None for v in row] for _, row in zip(range(500), reader, strict=False)]
    traffic = LiveTraffic(args.url, args.name, rows)
    traffic.start()
    api = client.CustomObjectsApi()

    print("\nRolling out v2 (retrained on later data) as a canary:", flush=True)
    done = roll_out(api, args.namespace, args.name, args.model_base, args.bundles, "2", traffic)
    print(f"=> v2: {done['history'][-1]['outcome']}; stable model version is now {done.get('modelVersion')}")

    print("\nRolling out v3 (trained on corrupted labels) as a canary:", flush=True)
    done = roll_out(api, args.namespace, args.name, args.model_base, args.bundles, "3", traffic)
    last = done["history"][-1]
    print(f"=> v3: {last['outcome']}: {last.get('message', '')}")
    print(
        f"   stable model version: {done.get('modelVersion')}; canary weight: {done.get('canaryWeight', 0)}%"
    )
    time.sleep(3)
    traffic.stop.set()
    print(f"   failed requests during both rollouts: {traffic.failed}")
    return 0 if traffic.failed == 0 and last["outcome"] == "Aborted" else 1


if __name__ == "__main__":
    sys.exit(main())
