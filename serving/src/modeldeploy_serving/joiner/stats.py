"""The effectiveness summary from stored rows: per window, per arm and variant, and A/B verdicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from modeldeploy_contract.effectiveness import (
    ABSettings,
    Arm,
    ArmQuality,
    ArmWindow,
    DeploymentSummary,
    DeploymentWindow,
    EffectivenessSummary,
    VariantWindow,
    compare_arms,
    quality_of,
)
from modeldeploy_serving.joiner.store import ArmKey, LabelledRow


def control_of(variants: Sequence[str], configured: str | None) -> str | None:
    """The control variant: the configured one when present, else the first by name of exactly two."""
    if configured is not None:
        return configured if configured in variants else None
    return sorted(variants)[0] if len(variants) == 2 else None


def summarize(
    *,
    now: float,
    arms: Mapping[int, ArmKey],
    counts: Mapping[float, Mapping[int, int]],
    rows: Sequence[LabelledRow],
    windows: Sequence[float],
    retention_seconds: float,
    control_variant: str | None = None,
    ab: ABSettings | None = None,
) -> EffectivenessSummary:
    """`counts[window][arm id]` is the number of predictions of the arm in that window; `rows` the
    labelled predictions of the largest window (smaller windows are filtered from them)."""
    # Windows are nested (rows of a smaller window are the newest rows of a larger one), so a group with
    # as many labelled rows as in a smaller window has the very same rows: its label-based metrics and
    # verdicts are reused (with 100,000s of labels the metrics are most of the cost).
    cache: dict[tuple[object, ...], Any] = {}
    by_deployment: dict[str, list[int]] = defaultdict(list)
    for arm_id, key in arms.items():
        by_deployment[key.deployment].append(arm_id)
    deployments = []
    for deployment in sorted(by_deployment):
        arm_ids = set(by_deployment[deployment])
        variants = sorted({arms[a].variant for a in arm_ids})
        control = control_of(variants, control_variant)
        summaries = []
        for window in windows:
            since = now - window
            mine = [r for r in rows if r.arm_id in arm_ids and r.predicted_at >= since]
            window_counts = counts.get(window, {})
            per_arm: dict[int, list[LabelledRow]] = defaultdict(list)
            for r in mine:
                per_arm[r.arm_id].append(r)
            arm_windows = []
            for arm_id in sorted(
                arm_ids, key=lambda a: (arms[a].variant, arms[a].revision, arms[a].model_version)
            ):
                n = window_counts.get(arm_id, 0)
                labelled = per_arm.get(arm_id, [])
                if n == 0 and not labelled:
                    continue
                key = arms[arm_id]
                arm_windows.append(ArmWindow(
                    variant=key.variant, revision=key.revision, model_version=key.model_version,
                    quality=_quality(cache, frozenset({arm_id}), labelled, n),
                ))  # fmt: skip
            variant_rows: dict[str, list[LabelledRow]] = defaultdict(list)
            variant_counts: dict[str, int] = defaultdict(int)
            variant_arms: dict[str, frozenset[int]] = {
                v: frozenset(a for a in arm_ids if arms[a].variant == v) for v in variants
            }
            for arm_id in arm_ids:
                variant_counts[arms[arm_id].variant] += window_counts.get(arm_id, 0)
                variant_rows[arms[arm_id].variant] += per_arm.get(arm_id, [])
            variant_windows = [
                VariantWindow(
                    variant=v,
                    quality=_quality(cache, variant_arms[v], variant_rows[v], variant_counts[v]),
                )
                for v in variants
                if variant_counts[v] or variant_rows[v]
            ]
            verdicts = []
            if control is not None:
                for v in variants:
                    if v != control:
                        key_ab = ("ab", deployment, v, len(variant_rows[control]), len(variant_rows[v]))
                        if key_ab not in cache:
                            cache[key_ab] = compare_arms(
                                _arm(control, variant_rows[control]), _arm(v, variant_rows[v]), ab
                            )
                        verdicts.append(cache[key_ab])
            summaries.append(
                DeploymentWindow(
                    window_seconds=window, arms=arm_windows, variants=variant_windows, ab=verdicts
                )
            )
        deployments.append(
            DeploymentSummary(deployment=deployment, control_variant=control, windows=summaries)
        )
    return EffectivenessSummary(
        generated_at=now, retention_seconds=retention_seconds, deployments=deployments
    )


def _quality(
    cache: dict[tuple[object, ...], Any],
    group: frozenset[int],
    rows: Sequence[LabelledRow],
    predictions: int,
) -> ArmQuality:
    key = ("quality", group, len(rows))  # a variant with one arm has that arm's rows
    labelled: ArmQuality | None = cache.get(key)
    if labelled is None:
        binary = all(r.classes == 2 for r in rows)
        labelled = cache[key] = quality_of(
            [r.score for r in rows], [r.predicted for r in rows], [r.label for r in rows], len(rows), binary
        )
    coverage = len(rows) / predictions if predictions else None
    return labelled.model_copy(update={"predictions": predictions, "coverage": coverage})


def _arm(name: str, rows: Sequence[LabelledRow]) -> Arm:
    # Built without validation: the values come typed from the store (validating 100,000s of floats
    # costs more than the statistics).
    return Arm.model_construct(
        name=name,
        scores=[r.score for r in rows],
        predicted=[r.predicted for r in rows],
        labels=[r.label for r in rows],
    )
