"""Summarise a test run's timeline ($MODELDEPLOY_TEST_TIMELINE, written by tests/conftest.py): per
pytest-xdist worker, how long it was busy, when it finished, and the groups (xdist groups, or single
tests) it ran in order with their wall time. The run's wall time is the last worker's end: this shows
which worker that was and what it carried.

    python hack/timeline.py FILE [--top N]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=8, help="longest groups listed per worker")
    args = parser.parse_args()
    if not args.file.is_file():
        print(f"no timeline at {args.file}")
        return 0
    lines = [json.loads(line) for line in args.file.read_text().splitlines() if line.strip()]
    if not lines:
        return 0
    start = min(e["start"] for e in lines)
    by_worker: dict[str, list[dict[str, object]]] = defaultdict(list)
    for e in lines:
        by_worker[e["worker"]].append(e)
    for worker, entries in sorted(by_worker.items()):
        busy = sum(e["end"] - e["start"] for e in entries)  # type: ignore[operator]
        end = max(e["end"] for e in entries) - start  # type: ignore[operator]
        groups: dict[str, float] = defaultdict(float)
        for e in entries:
            test = str(e["test"])
            group = test.rsplit("@", 1)[1] if "@" in test else "(ungrouped)"
            groups[group] += e["end"] - e["start"]  # type: ignore[operator]
        print(f"{worker}: {len(entries)} tests, busy {busy:.0f} s, last test ended at {end:.0f} s")
        for group, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"    {seconds:7.0f} s  {group}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
