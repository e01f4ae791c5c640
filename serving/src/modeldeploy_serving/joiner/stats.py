"""The effectiveness summary from stored rows: per window, per arm and variant, and A/B verdicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

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
                    quality=_quality(labelled, n),
                ))  # fmt: skip
            variant_rows: dict[str, list[LabelledRow]] = defaultdict(list)
            variant_counts: dict[str, int] = defaultdict(int)
            for arm_id in arm_ids:
                variant_counts[arms[arm_id].variant] += window_counts.get(arm_id, 0)
                variant_rows[arms[arm_id].variant] += per_arm.get(arm_id, [])
            variant_windows = [
                VariantWindow(variant=v, quality=_quality(variant_rows[v], variant_counts[v]))
                for v in variants
                if variant_counts[v] or variant_rows[v]
            ]
            verdicts = []
            if control is not None:
                for v in variants:
                    if v != control:
                        verdicts.append(
                            compare_arms(_arm(control, variant_rows[control]), _arm(v, variant_rows[v]), ab)
                        )
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


def _quality(rows: Sequence[LabelledRow], predictions: int) -> ArmQuality:
    binary = all(r.classes == 2 for r in rows)
    return quality_of(
        [r.score for r in rows], [r.predicted for r in rows], [r.label for r in rows], predictions, binary
    )


def _arm(name: str, rows: Sequence[LabelledRow]) -> Arm:
    return Arm(
        name=name,
        scores=[r.score for r in rows],
        predicted=[r.predicted for r in rows],
        labels=[r.label for r in rows],
    )
