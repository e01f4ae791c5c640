"""The one conversion of traffic weights: the plan's whole percents to basis points of all traffic."""

from __future__ import annotations

import pytest

from modeldeploy_contract.weights import BASIS_POINTS_TOTAL, arm_weight_bp, bp_to_percent


@pytest.mark.parametrize(
    ("variant_percent", "revision_percent", "weight_bp", "percent"),
    [
        (100, 100, 10_000, 100.0),  # one variant, one revision: everything
        (100, 25, 2_500, 25.0),  # a canary step at 25 %
        (100, 75, 7_500, 75.0),  # ... and its stable
        (50, 10, 500, 5.0),  # a canary at 10 % inside variant a at 50 %
        (10, 5, 50, 0.5),  # a half percent, exact
        (33, 67, 2_211, 22.11),
        (1, 1, 1, 0.01),  # the smallest non-zero weight: one basis point, one slot
        (0, 100, 0, 0.0),  # a shadow-only variant takes no live traffic
        (100, 0, 0, 0.0),  # a preview or drained revision
    ],
)
def test_arm_weight_in_basis_points(
    variant_percent: int, revision_percent: int, weight_bp: int, percent: float
) -> None:
    assert arm_weight_bp(variant_percent, revision_percent) == weight_bp
    assert bp_to_percent(weight_bp) == pytest.approx(percent)


def test_a_plan_whose_percents_sum_to_100_gives_basis_points_that_sum_to_the_total() -> None:
    # variants 50/30/20, variant a mid-canary at 10 %, c with a preview at 0 %
    plan = {"a": {"canary": 10, "stable": 90}, "b": {"stable": 100}, "c": {"preview": 0, "stable": 100}}
    variants = {"a": 50, "b": 30, "c": 20}
    arms = {
        (v, r): arm_weight_bp(variants[v], share)
        for v, revisions in plan.items()
        for r, share in revisions.items()
    }
    assert arms == {
        ("a", "canary"): 500,
        ("a", "stable"): 4_500,
        ("b", "stable"): 3_000,
        ("c", "preview"): 0,
        ("c", "stable"): 2_000,
    }
    assert sum(arms.values()) == BASIS_POINTS_TOTAL


@pytest.mark.parametrize(("variant_percent", "revision_percent"), [(101, 1), (-1, 50), (50, 101), (True, 50)])
def test_percents_outside_0_to_100_are_refused(variant_percent: int, revision_percent: int) -> None:
    with pytest.raises(ValueError, match="whole percent"):
        arm_weight_bp(variant_percent, revision_percent)


@pytest.mark.parametrize("weight_bp", [-1, 10_001])
def test_basis_points_outside_the_total_are_refused(weight_bp: int) -> None:
    with pytest.raises(ValueError, match=r"not in 0\.\.10000"):
        bp_to_percent(weight_bp)
