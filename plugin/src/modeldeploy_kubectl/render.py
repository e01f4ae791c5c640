"""Text views of ModelDeployments (pure: an object in, text out; no cluster, no clock of their own).

`render_view` is what `get` prints and what `get --watch` redraws: phase, where to call, strategy and
step, the steps (the current one marked), revisions with their weights and readiness, each analysis
check with its latest value and its recent values, conditions, the last manual command and, outside a
watch, recent Events. `render_list` is `list`'s table, `render_history` is `history`'s.

Colour is a `Style`: ANSI codes when the caller decided the output is a terminal, plain text otherwise.
Tables are aligned on the plain text, then coloured, so colour never shifts a column.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from modeldeploy_contract.effectiveness import EffectivenessSummary
from modeldeploy_contract.status import HistoryEntry, ModelDeploymentStatus, RevisionStatus

MAX_EVENTS = 8
RECENT_VALUES = 5

_CODES = {
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "grey": "90",
    "bold": "1",
}
PHASE_ICONS = {
    "Ready": "✔",
    "Progressing": "◌",
    "Pending": "◌",
    "Paused": "॥",
    "Degraded": "✖",
    "Failed": "✖",
}
_PHASE_COLOURS = {
    "Ready": "green",
    "Progressing": "yellow",
    "Pending": "yellow",
    "Paused": "magenta",
    "Degraded": "red",
    "Failed": "red",
}
_RESULT_COLOURS = {
    "Pass": "green",
    "Fail": "red",
    "Inconclusive": "yellow",
    "Applied": "green",
    "Ignored": "yellow",
    "Rejected": "red",
}


@dataclass(frozen=True)
class Style:
    """Colours on (a terminal, NO_COLOR unset) or off."""

    color: bool = False

    def paint(self, colour: str | None, text: str) -> str:
        if not self.color or colour is None or not text:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def phase(self, phase: str) -> str:
        return self.paint(_PHASE_COLOURS.get(phase), f"{PHASE_ICONS.get(phase, '?')} {phase}")

    def result(self, result: str) -> str:
        return self.paint(_RESULT_COLOURS.get(result), result)


PLAIN = Style()


@dataclass(frozen=True)
class Cell:
    text: str
    colour: str | None = None


Row = Sequence[str | Cell]


def _table(rows: Sequence[Row], style: Style = PLAIN) -> list[str]:
    cells = [[c if isinstance(c, Cell) else Cell(c) for c in row] for row in rows]
    widths = [max(len(row[i].text) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for row in cells:
        parts = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            text = cell.text if i == len(row) - 1 else cell.text.ljust(width)
            parts.append(style.paint(cell.colour, text))
        lines.append("  ".join(parts).rstrip())
    return lines


def read_status(body: Mapping[str, Any]) -> tuple[ModelDeploymentStatus, tuple[str, ...]]:
    """The object's status, and the top-level status fields left out because this plugin cannot read
    them (an operator newer than the plugin may write values it does not know, e.g. a new phase): the
    rest is still shown, and the view says what was left out rather than failing."""
    raw = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
    skipped: list[str] = []
    while True:
        try:
            return ModelDeploymentStatus.model_validate(raw), tuple(skipped)
        except ValidationError as error:
            bad = sorted({str(e["loc"][0]) for e in error.errors() if e["loc"]} & raw.keys())
            if not bad:
                return ModelDeploymentStatus(), (*skipped, "status")
            for key in bad:
                raw.pop(key)
            skipped += bad


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _two(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}{small}{small_unit}" if small else f"{big}{big_unit}"


_HOUR, _DAY, _YEAR = 3600, 86400, 365 * 86400
_HUMAN: tuple[tuple[int, Callable[[int], str]], ...] = (
    (120, lambda s: f"{s}s"),
    (600, lambda s: _two(s // 60, "m", s % 60, "s")),
    (3 * _HOUR, lambda s: f"{s // 60}m"),
    (8 * _HOUR, lambda s: _two(s // _HOUR, "h", s // 60 % 60, "m")),
    (2 * _DAY, lambda s: f"{s // _HOUR}h"),
    (8 * _DAY, lambda s: _two(s // _DAY, "d", s // _HOUR % 24, "h")),
    (2 * _YEAR, lambda s: f"{s // _DAY}d"),
    (8 * _YEAR, lambda s: _two(s // _YEAR, "y", s // _DAY % 365, "d")),
)


def human_duration(seconds: int) -> str:
    """kubectl's HumanDuration (apimachinery): 90s, 5m30s, 45m, 5h10m, 30h, 3d4h, 20d, 3y."""
    seconds = max(0, seconds)
    return next((fmt(seconds) for limit, fmt in _HUMAN if seconds < limit), f"{seconds // _YEAR}y")


def age(created: str | None, now: datetime) -> str:
    """kubectl's AGE column, from an RFC 3339 timestamp."""
    if not created:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration(int((now - then).total_seconds()))


def describe_step(step: Mapping[str, Any]) -> str:
    """One rollout step (spec.rollout.steps[i], as JSON) in words; a kind this plugin does not know
    (a newer operator's) is shown as its JSON rather than hidden."""
    if step.get("setWeight") is not None:
        return f"setWeight {step['setWeight']}%"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return f"pause {duration}" if duration else "pause (until resumed)"
    if "analysis" in step:
        analysis = step.get("analysis") or {}
        checks = ", ".join(analysis.get("checks") or ()) or "all checks"
        duration = analysis.get("duration")
        return f"analysis {duration} ({checks})" if duration else f"analysis ({checks})"
    if isinstance(step.get("shadow"), Mapping) and step["shadow"].get("duration"):
        shadow = step["shadow"]
        checks = ", ".join(shadow.get("checks") or ()) or "all checks"
        return f"shadow {shadow.get('percent', 100)}% mirrored {shadow['duration']} ({checks})"
    return ", ".join(f"{key} {json.dumps(value, separators=(',', ':'))}" for key, value in step.items())


def _steps_of(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    rollout = (body.get("spec") or {}).get("rollout") or {}
    return [s for s in rollout.get("steps") or () if isinstance(s, Mapping)]


def _strategy_of(body: Mapping[str, Any]) -> str:
    return str(((body.get("spec") or {}).get("rollout") or {}).get("strategy") or "Immediate")


def current_step(status: ModelDeploymentStatus) -> int | None:
    """Index of the step in progress, or None outside a rollout (or after an abort)."""
    if status.canary_revision and not status.aborted:
        return status.current_step_index
    return None


def _entry_for(status: ModelDeploymentStatus, revision_hash: str | None) -> HistoryEntry | None:
    entries = [e for e in status.history if e.hash == revision_hash]
    return max(entries, key=lambda e: e.revision) if entries else None


def _revision_text(status: ModelDeploymentStatus, revision_hash: str | None) -> str:
    if revision_hash is None:
        return "-"
    entry = _entry_for(status, revision_hash)
    if entry is None:
        return revision_hash
    return f"revision {entry.revision}  {revision_hash}  version {entry.model_version}"


def _step_lines(steps: Sequence[Mapping[str, Any]], status: ModelDeploymentStatus, style: Style) -> list[str]:
    current = current_step(status)
    lines = []
    for index, step in enumerate(steps):
        text = f"{index + 1}. {describe_step(step)}"
        if index == current:
            until = status.pause.until if status.pause is not None else None
            suffix = f"  (until {_time(until)})" if until else ""
            lines.append("  " + style.paint("yellow", f"▶ {text}{suffix}"))
        elif current is not None and index < current:
            lines.append("  " + style.paint("green", "✓") + f" {text}")
        else:
            lines.append(f"    {text}")
    if current is not None and current >= len(steps):
        lines.append("  " + style.paint("yellow", "▶ promotion (waiting for all the new revision's pods)"))
    return lines


def _role(revision: RevisionStatus) -> str:
    """The role, and for a revision in its rollback window until when a rollback to it is instant."""
    if revision.warm_until is not None and revision.weight == 0:
        return f"{revision.role} (warm until {_time(revision.warm_until)})"
    return revision.role


def _revision_lines(status: ModelDeploymentStatus, style: Style) -> list[str]:
    rows: list[Row] = [["VARIANT", "WEIGHT", "REVISION", "ROLE", "#", "VERSION", "TRAFFIC", "READY"]]
    for variant in status.variants:
        for revision in variant.revisions:
            ready = f"{revision.ready_replicas}/{revision.replicas}"
            rows.append(
                [
                    variant.name,
                    f"{variant.weight}%",
                    revision.revision,
                    Cell(_role(revision), "blue" if revision.role == "canary" else None),
                    str(revision.number or "-"),
                    revision.model_version or "-",
                    Cell(f"{revision.weight}%", "bold" if revision.weight else None),
                    Cell(ready, "green" if revision.ready_replicas >= revision.replicas else "yellow"),
                ]
            )
    return ["  " + line for line in _table(rows, style)] if len(rows) > 1 else ["  (none)"]


def _check_lines(status: ModelDeploymentStatus, style: Style) -> list[str]:
    analysis = status.analysis
    if analysis is None or not analysis.checks:
        return []
    rows: list[Row] = [["CHECK", "RESULT", "VALUE", "SAMPLES", "FAILURES", "RECENT", "WHEN", "DETAIL"]]
    for check in analysis.checks:
        latest = check.measurements[-1] if check.measurements else None
        recent = " ".join(_number(m.value) for m in check.measurements[-RECENT_VALUES:]) or "-"
        result = check.result or "-"
        rows.append(
            [
                check.name,
                Cell(result, _RESULT_COLOURS.get(result)),
                _number(latest.value) if latest else "-",
                str(latest.samples) if latest else "-",
                str(check.failures),
                recent,
                _time(latest.time) if latest else "-",
                (latest.message or "") if latest else "",
            ]
        )
    head = f"Analysis:    {analysis.revision or '-'}  (last run {_time(analysis.last_run_at)})"
    return [head, *("  " + line for line in _table(rows, style))]


_VERDICT_COLOURS = {"TreatmentBetter": "green", "ControlBetter": "red", "Inconclusive": "yellow"}


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def render_effectiveness(name: str, summary: bytes | str | None, style: Style = PLAIN) -> list[str]:
    """Per arm and window: labelled predictions and their quality, then each A/B verdict with its
    interval. `summary`: the joiner's /v1/effectiveness answer, or why it could not be read."""
    if summary is None:
        return []
    if isinstance(summary, str):
        return ["Effectiveness: " + style.paint("yellow", f"the label joiner could not be read: {summary}")]
    try:
        parsed = EffectivenessSummary.model_validate_json(summary)
    except ValidationError as error:
        why = str(error.errors()[0]["msg"])[:200]
        return [
            "Effectiveness: " + style.paint("yellow", f"the label joiner's answer is not understood: {why}")
        ]
    deployment = next((d for d in parsed.deployments if d.deployment == name), None)
    if deployment is None or not any(w.arms for w in deployment.windows):
        return ["Effectiveness: no predictions recorded by the label joiner yet"]
    rows: list[Row] = [
        ["WINDOW", "VARIANT", "REVISION", "VERSION", "PREDICTIONS", "LABELLED", "COVERAGE", "ACCURACY", "AUC",
         "LOG LOSS", "BRIER"]
    ]  # fmt: skip
    verdicts: list[str] = []
    for window in deployment.windows:
        span = human_duration(int(window.window_seconds))
        for arm in window.arms:
            q = arm.quality
            counts = [str(q.predictions), str(q.labelled), _share(q.coverage)]
            scores = [_number(q.accuracy), _number(q.auc), _number(q.log_loss), _number(q.brier)]
            rows.append([span, arm.variant, arm.revision, arm.model_version, *counts, *scores])
        for ab in window.ab:
            interval = (
                f"{ab.difference:+.4f} [{ab.lower:+.4f}, {ab.upper:+.4f}] at {ab.confidence:.0%}"
                if ab.difference is not None and ab.lower is not None and ab.upper is not None
                else "no interval yet"
            )
            more = f", {ab.labels_still_needed} more labels needed" if ab.labels_still_needed else ""
            verdict = style.paint(_VERDICT_COLOURS.get(ab.verdict), ab.verdict)
            verdicts.append(
                f"  A/B {span} {ab.metric} {ab.treatment} - {ab.control}: {interval}  {verdict}"
                f" (labels {ab.labelled_treatment}/{ab.labelled_control}{more})"
            )
    control = f", control {deployment.control_variant}" if deployment.control_variant else ""
    head = f"Effectiveness: delayed labels joined to predictions (label joiner{control})"
    return [head, *("  " + line for line in _table(rows, style)), *verdicts]


_PREFLIGHT_COLOURS = {"Passed": "green", "Failed": "red", "Pending": "yellow", "Skipped": "grey"}


def _preflight_lines(status: ModelDeploymentStatus, style: Style) -> list[str]:
    """Each variant's golden-set replay before traffic: its result, why, and every comparison."""
    lines: list[str] = []
    for entry in status.preflight:
        result = style.paint(_PREFLIGHT_COLOURS.get(entry.result), entry.result)
        lines.append(f"Preflight:   {entry.variant} {entry.revision}: {result} - {entry.message}")
        if not entry.checks:
            continue
        rows: list[Row] = [["CHECK", "RESULT", "VALUE", "THRESHOLD", "DETAIL"]]
        for check in entry.checks:
            outcome = {True: "Pass", False: "Fail", None: "Skip"}[check.passed]
            rows.append(
                [
                    check.name,
                    Cell(outcome, _RESULT_COLOURS.get(outcome)),
                    _number(check.value),
                    _number(check.threshold),
                    check.detail,
                ]
            )
        lines += ["  " + line for line in _table(rows, style)]
    return lines


def _event_lines(events: Sequence[Mapping[str, Any]], style: Style) -> list[str]:
    def when(event: Mapping[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    recent = sorted(events, key=when)[-MAX_EVENTS:]
    if not recent:
        return ["  (none)"]
    rows: list[Row] = [
        [
            when(e)[:19].replace("T", " "),
            Cell(str(e.get("type", "")), "red" if e.get("type") == "Warning" else None),
            str(e.get("reason", "")),
            str(e.get("message", "")),
        ]
        for e in recent
    ]
    return ["  " + line for line in _table(rows, style)]


def render_view(
    body: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] | None = None,
    *,
    style: Style = PLAIN,
    effectiveness: bytes | str | None = None,
) -> str:
    """The live view of one ModelDeployment (`get`; `get --watch` redraws it); events None: no section.
    `effectiveness`: the label joiner's summary (spec.effectiveness), or why it could not be read."""
    status, unread = read_status(body)
    meta = body.get("metadata") or {}
    steps = _steps_of(body)
    current = current_step(status)
    phase = style.phase(status.phase) + (f" - {status.message}" if status.message else "")
    lines = [
        f"Name:        {meta.get('name', '-')}",
        f"Namespace:   {meta.get('namespace', '-')}",
        f"Phase:       {phase}",
        f"URL:         {status.url or '-'}",
        f"Strategy:    {_strategy_of(body)}",
    ]
    if current is not None and steps:
        shown = min(current + 1, len(steps))
        lines.append(f"  Step:      {shown}/{len(steps)}")
    lines.append(f"Stable:      {_revision_text(status, status.stable_revision)}")
    if status.canary_revision:
        state = style.paint("red", "aborted") if status.aborted else f"weight {status.canary_weight}%"
        lines.append(f"Canary:      {_revision_text(status, status.canary_revision)}  ({state})")
    if status.pause is not None:
        pause = status.pause
        until = f" until {_time(pause.until)}" if pause.until else ""
        why = f": {pause.message}" if pause.message else ""
        lines.append(
            "Paused:      " + style.paint("magenta", f"{pause.reason} since {_time(pause.since)}{until}{why}")
        )
    if status.pinned_revision is not None:
        lines.append(f"Pinned:      revision {status.pinned_revision} (a rollback; the spec names another)")
    lines.append(f"Replicas:    {status.ready or f'{status.ready_replicas}/{status.replicas}'} ready")
    if steps:
        lines += ["Steps:", *_step_lines(steps, status, style)]
    lines += ["Revisions:", *_revision_lines(status, style)]
    lines += _preflight_lines(status, style)
    lines += _check_lines(status, style)
    lines += render_effectiveness(str(meta.get("name", "")), effectiveness, style)
    conditions = ", ".join(
        style.paint("green" if c.status == "True" else "grey", f"{c.type}={c.status}") + f" ({c.reason})"
        for c in status.conditions
    )
    lines.append(f"Conditions:  {conditions or '-'}")
    if status.last_command is not None:
        command = status.last_command
        lines.append(
            f"Last command: {command.action} -> {style.result(command.result)}: {command.message}"
            f"  ({_time(command.time)})"
        )
    if status.last_error is not None:
        lines.append(
            "Last error:  " + style.paint("red", f"{status.last_error.reason}: {status.last_error.message}")
        )
    if unread:
        lines.append(
            "Not shown:   status fields this plugin cannot read: "
            + ", ".join(unread)
            + " (an operator newer than the plugin? upgrade modeldeploy-kubectl)"
        )
    if events is not None:
        lines += ["Events:", *_event_lines(events, style)]
    return "\n".join(lines)


DIGEST_CHARS = 12
"""Digests are shown by their first 12 hex characters (48 bits: a clash among one object's handful of
bundles is out of reach), as `git log --oneline` shows commits."""


def loaded_text(entry: HistoryEntry) -> str:
    """What the revision's servers reported loading: `-` before any did; each digest, comma-separated
    (more than one: the model URI's content changed between pod starts); `!` after a digest that is
    not the spec's pinned model.sha256 (the servers refuse such a bundle, so it shows a status written
    by another operator version or a hand edit)."""
    if not entry.loaded_sha256:
        return "-"
    marks = [
        d[:DIGEST_CHARS] + ("!" if entry.sha256 is not None and d != entry.sha256 else "")
        for d in entry.loaded_sha256
    ]
    return ",".join(marks)


def read_history(body: Mapping[str, Any]) -> tuple[list[HistoryEntry], tuple[str, ...]]:
    """status.history entry by entry, each without the fields this plugin cannot read (named in the
    second value, as `field of revision N`), so one odd value (a newer operator's, a hand edit) costs
    that field, not the whole history. An entry without its required fields is left out, named too."""
    raw_entries = (body.get("status") or {}).get("history")
    entries: list[HistoryEntry] = []
    skipped: list[str] = []
    for index, raw in enumerate(raw_entries if isinstance(raw_entries, list) else []):
        fields = dict(raw) if isinstance(raw, Mapping) else {}
        name = f"revision {fields.get('revision', f'#{index + 1}')}"
        while True:
            try:
                entries.append(HistoryEntry.model_validate(fields))
                break
            except ValidationError as error:
                bad = sorted({str(e["loc"][0]) for e in error.errors() if e["loc"]} & fields.keys())
                optional = [k for k in bad if not HistoryEntry.model_fields[_attribute(k)].is_required()]
                if not optional:
                    skipped.append(f"{name} (unreadable)")
                    break
                for key in optional:
                    fields.pop(key)
                skipped += [f"{key} of {name}" for key in optional]
    return entries, tuple(skipped)


def _attribute(alias: str) -> str:
    """The HistoryEntry attribute behind a status key (camelCase alias, e.g. loadedSha256)."""
    for attribute, field in HistoryEntry.model_fields.items():
        if alias in (attribute, field.alias):
            return attribute
    return alias


def render_history(body: Mapping[str, Any]) -> str:
    """One line per revision: number, version, uri, the spec's sha256 and the one the servers
    loaded, times, outcome."""
    status, _ = read_status(body)
    history, unread = read_history(body)
    rows: list[Row] = [
        [
            "REVISION",
            "VARIANT",
            "VERSION",
            "HASH",
            "URI",
            "SHA256",
            "LOADED",
            "CREATED",
            "FINISHED",
            "OUTCOME",
            "MESSAGE",
        ]
    ]
    serving = {v.revision for v in status.variants}
    for entry in sorted(history, key=lambda e: e.revision):
        mark = "*" if entry.hash in serving else ""
        rows.append(
            [
                f"{entry.revision}{mark}",
                entry.variant,
                entry.model_version,
                entry.hash,
                entry.model_uri,
                (entry.sha256 or "-")[:DIGEST_CHARS],
                loaded_text(entry),
                _time(entry.created_at),
                _time(entry.finished_at),
                entry.outcome,
                entry.message or "",
            ]
        )
    note = [f"Not shown: {', '.join(unread)} (an operator newer than the plugin?)"] if unread else []
    if len(rows) == 1:
        return "\n".join(["no revisions yet", *note])
    return "\n".join([*_table(rows), "* serving now", *note])


def _list_row(body: Mapping[str, Any], now: datetime, all_namespaces: bool) -> list[str | Cell]:
    status, _ = read_status(body)
    meta = body.get("metadata") or {}
    steps = _steps_of(body)
    current = current_step(status)
    step = f"{min(current + 1, len(steps))}/{len(steps)}" if current is not None and steps else "-"
    row: list[str | Cell] = [str(meta.get("namespace", "-"))] if all_namespaces else []
    return [
        *row,
        str(meta.get("name", "-")),
        status.model_version or "-",
        Cell(status.phase, _PHASE_COLOURS.get(status.phase)),
        step,
        f"{status.canary_weight}%" if status.canary_revision else "-",
        status.ready or f"{status.ready_replicas}/{status.replicas}",
        status.url or "-",
        age(meta.get("creationTimestamp"), now),
    ]


def render_list(
    bodies: Sequence[Mapping[str, Any]],
    *,
    all_namespaces: bool,
    now: datetime | None = None,
    style: Style = PLAIN,
) -> str:
    """`list`: a table like `kubectl get` (NAMESPACE first with -A), sorted by namespace and name."""
    now = now or datetime.now(UTC)
    if not bodies:
        return ""
    header = ["NAME", "MODEL", "PHASE", "STEP", "CANARY", "READY", "URL", "AGE"]
    if all_namespaces:
        header = ["NAMESPACE", *header]
    ordered = sorted(
        bodies,
        key=lambda b: (
            (b.get("metadata") or {}).get("namespace", ""),
            (b.get("metadata") or {}).get("name", ""),
        ),
    )
    rows: list[Row] = [header, *(_list_row(b, now, all_namespaces) for b in ordered)]
    return "\n".join(_table(rows, style))
