"""What the operator's caches hold in Python per object, by kind (issue 16: the operator's RSS).

    .venv/bin/python bench/operator/scale.py --private-control-plane --count 300 ... --dump-objects /tmp/objs
    .venv/bin/python bench/operator/cache_memory.py /tmp/objs/objects-modeldeploy-300.json

The input is what `scale.py --dump-objects` wrote once every ModelDeployment was created: the bench
namespace's objects of every kind the operator caches (labelled `modeldeploy.io/deployment`, as its
informers select them), and the ModelDeployments (the controller keeps their bodies), as the API server
lists them. For each kind, the memory tracemalloc counts (dicts, lists and strings alike) that the
objects keep, loaded from their JSON as the operator loads a list, then kept:

- whole: as listed;
- main: as the store kept them before k8s/projection.py: managedFields cut to who applies
  spec.replicas, the rest whole (the `slim` of commit 72daf08, copied below); ModelDeployments whole;
- projected: what this checkout keeps (k8s/projection.py `projection(kind)`).

Each kind's objects are loaded together and what is kept is measured after the loaded list is let go,
so a projection that shares a part with its input (an applied object's spec) counts that part once.
Prints a table (per object and in all, and per ModelDeployment) and, with --json, writes it.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldeploy_operator.k8s.projection import projection

Object = dict[str, Any]


def main_slim(obj: Object) -> Object:
    """The store's `slim` before this change (operator/src/modeldeploy_operator/k8s/cache.py at 72daf08)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    kept: list[Object] = [
        {"manager": entry.get("manager"), "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        for entry in meta.get("managedFields") or ()
        if isinstance(entry, dict)
        and entry.get("operation") == "Apply"
        and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    ]
    trimmed = {k: v for k, v in meta.items() if k != "managedFields"}
    if kept:
        trimmed["managedFields"] = kept
    return {**obj, "metadata": trimmed}


def kept_bytes(text: str, keep: Callable[[Object], Object] | None) -> tuple[int, int]:
    """(bytes of the objects as loaded, bytes of what `keep` keeps of them once the loaded ones are gone)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        items = json.loads(text)
        loaded = tracemalloc.get_traced_memory()[0] - base
        kept = [keep(i) for i in items] if keep is not None else items
        del items
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - base
        del kept
    finally:
        tracemalloc.stop()
    return loaded, retained


def measure(dump: dict[str, Any]) -> dict[str, Any]:
    count = int(dump["count"])
    kinds: dict[str, Any] = {}
    for kind, items in dump["kinds"].items():
        if not items:
            continue
        text = json.dumps(items)
        whole, _ = kept_bytes(text, None)
        _, main = kept_bytes(text, None if kind == "ModelDeployment" else main_slim)
        _, projected = kept_bytes(text, projection(kind))
        n = len(items)
        kinds[kind] = {
            "objects": n,
            "json_bytes_per_object": round(len(text) / n),
            "whole_bytes_per_object": round(whole / n),
            "main_bytes_per_object": round(main / n),
            "projected_bytes_per_object": round(projected / n),
            "whole_mib": round(whole / 2**20, 2),
            "main_mib": round(main / 2**20, 2),
            "projected_mib": round(projected / 2**20, 2),
        }
    totals = {
        key: round(sum(k[key] for k in kinds.values()), 1)
        for key in ("whole_mib", "main_mib", "projected_mib")
    }
    per_md = {
        f"{way}_kb_per_modeldeployment": round(
            sum(k[f"{way}_bytes_per_object"] * k["objects"] for k in kinds.values()) / count / 1000, 1
        )
        for way in ("whole", "main", "projected")
    }
    return {"modeldeployments": count, "kinds": kinds, "total_mib": totals, "per_modeldeployment": per_md}


def table(result: dict[str, Any]) -> str:
    rows = [
        "| kind | objects | JSON kB each | Python kB each: whole / main / projected "
        "| MiB in all: whole / main / projected |",
        "|---|---|---|---|---|",
    ]
    for kind, k in result["kinds"].items():
        each = " / ".join(
            f"{k[f'{way}_bytes_per_object'] / 1000:.1f}" for way in ("whole", "main", "projected")
        )
        rows.append(
            f"| {kind} | {k['objects']} | {k['json_bytes_per_object'] / 1000:.1f} | {each} "
            f"| {k['whole_mib']} / {k['main_mib']} / {k['projected_mib']} |"
        )
    t, p = result["total_mib"], result["per_modeldeployment"]
    objects = sum(k["objects"] for k in result["kinds"].values())
    per_md = " / ".join(f"{p[f'{way}_kb_per_modeldeployment']:.0f}" for way in ("whole", "main", "projected"))
    rows.append(
        f"| all, {result['modeldeployments']} ModelDeployments | {objects} | | per ModelDeployment: {per_md} "
        f"| {t['whole_mib']} / {t['main_mib']} / {t['projected_mib']} |"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dump", type=Path, help="a file scale.py --dump-objects wrote")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    result = measure(json.loads(args.dump.read_text()))
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
