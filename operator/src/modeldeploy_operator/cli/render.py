"""Plain-text views of a ModelDeployment for `kubectl modeldeploy status` and `history` (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modeldeploy_operator.domain.spec import ModelDeploymentSpec, Step
from modeldeploy_operator.domain.status_model import HistoryEntry, ModelDeploymentStatus

MAX_EVENTS = 8


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def describe_step(step: Step) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}%"
    if step.pause is not None:
        return f"pause {step.pause.duration}" if step.pause.duration else "pause (until resumed)"
    if step.analysis is not None:
        checks = ", ".join(step.analysis.checks) or "all checks"
        return f"analysis {step.analysis.duration or ''} ({checks})".replace("  ", " ")
    return "?"


def _entry_for(status: ModelDeploymentStatus, revision_hash: str | None) -> HistoryEntry | None:
    entries = [e for e in status.history if e.hash == revision_hash]
    return max(entries, key=lambda e: e.revision) if entries else None


def _revision_line(status: ModelDeploymentStatus, label: str, revision_hash: str | None) -> str:
    if revision_hash is None:
        return f"{label}-"
    entry = _entry_for(status, revision_hash)
    if entry is None:
        return f"{label}{revision_hash}"
    return f"{label}revision {entry.revision}  {revision_hash}  version {entry.model_version}"


def _steps(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> list[str]:
    current = status.current_step_index if status.canary_revision and not status.aborted else None
    lines = []
    for index, step in enumerate(spec.rollout.steps):
        done = current is not None and index < current
        marker = "▶" if index == current else ("✓" if done else " ")
        lines.append(f"  {marker} {index + 1}. {describe_step(step)}")
    if current is not None and current >= len(spec.rollout.steps):
        lines.append("  ▶ promotion (waiting for all the new revision's pods)")
    return lines


def _checks(status: ModelDeploymentStatus) -> list[str]:
    if status.analysis is None or not status.analysis.checks:
        return []
    rows = [["CHECK", "RESULT", "VALUE", "SAMPLES", "FAILURES", "WHEN", "DETAIL"]]
    for check in status.analysis.checks:
        latest = check.measurements[-1] if check.measurements else None
        value = f"{latest.value:.6g}" if latest and latest.value is not None else "-"
        rows.append(
            [
                check.name,
                check.result or "-",
                value,
                str(latest.samples) if latest else "-",
                str(check.failures),
                _time(latest.time) if latest else "-",
                (latest.message or "") if latest else "",
            ]
        )
    return [f"Analysis of {status.analysis.revision}:", *("  " + line for line in _table(rows))]


def _variants(status: ModelDeploymentStatus) -> list[str]:
    rows = [["VARIANT", "WEIGHT", "REVISION", "ROLE", "#", "VERSION", "TRAFFIC", "READY"]]
    for variant in status.variants:
        for revision in variant.revisions:
            rows.append(
                [
                    variant.name,
                    f"{variant.weight}%",
                    revision.revision,
                    revision.role,
                    str(revision.number or "-"),
                    revision.model_version or "-",
                    f"{revision.weight}%",
                    f"{revision.ready_replicas}/{revision.replicas}",
                ]
            )
    return ["  " + line for line in _table(rows)] if len(rows) > 1 else ["  (none)"]


def _events(events: Sequence[dict[str, Any]]) -> list[str]:
    def when(event: dict[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    recent = sorted(events, key=when)[-MAX_EVENTS:]
    if not recent:
        return ["  (none)"]
    rows = [
        [when(e)[:19].replace("T", " "), e.get("type", ""), e.get("reason", ""), e.get("message", "")]
        for e in recent
    ]
    return ["  " + line for line in _table(rows)]


def render_status(body: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> str:
    """The readable view: phase, revisions, steps (current one marked), weights, checks, events."""
    spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
    status = ModelDeploymentStatus.model_validate(body.get("status") or {})
    meta = body["metadata"]
    lines = [
        f"Name:        {meta['name']}  (namespace {meta.get('namespace', '-')})",
        f"Phase:       {status.phase}" + (f" - {status.message}" if status.message else ""),
        f"Strategy:    {spec.rollout.strategy}",
        _revision_line(status, "Stable:      ", status.stable_revision),
    ]
    if status.canary_revision:
        state = "aborted" if status.aborted else f"weight {status.canary_weight}%"
        lines.append(_revision_line(status, "Canary:      ", status.canary_revision) + f"  ({state})")
    if status.pause is not None:
        until = f" until {_time(status.pause.until)}" if status.pause.until else ""
        lines.append(f"Paused:      {status.pause.reason} since {_time(status.pause.since)}{until}")
    if status.pinned_revision is not None:
        lines.append(f"Pinned:      revision {status.pinned_revision} (a rollback; the spec names another)")
    if spec.rollout.steps:
        lines += ["Steps:", *_steps(spec, status)]
    lines += ["Revisions:", *_variants(status)]
    lines += _checks(status)
    conditions = ", ".join(f"{c.type}={c.status} ({c.reason})" for c in status.conditions)
    lines.append(f"Conditions:  {conditions or '-'}")
    if status.last_command is not None:
        command = status.last_command
        lines.append(f"Last command: {command.action} -> {command.result}: {command.message}")
    lines += ["Events:", *_events(events)]
    return "\n".join(lines)


def render_history(body: dict[str, Any]) -> str:
    """One line per revision: number, version, uri, sha256, times, outcome."""
    status = ModelDeploymentStatus.model_validate(body.get("status") or {})
    rows = [
        [
            "REVISION",
            "VARIANT",
            "VERSION",
            "HASH",
            "URI",
            "SHA256",
            "CREATED",
            "FINISHED",
            "OUTCOME",
            "MESSAGE",
        ]
    ]
    serving = {v.revision for v in status.variants}
    for entry in sorted(status.history, key=lambda e: e.revision):
        mark = "*" if entry.hash in serving else ""
        rows.append(
            [
                f"{entry.revision}{mark}",
                entry.variant,
                entry.model_version,
                entry.hash,
                entry.model_uri,
                (entry.sha256 or "-")[:12],
                _time(entry.created_at),
                _time(entry.finished_at),
                entry.outcome,
                entry.message or "",
            ]
        )
    if len(rows) == 1:
        return "no revisions yet"
    return "\n".join([*_table(rows), "* serving now"])
