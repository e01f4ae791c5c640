"""Fields the API server rewrites compare equal (issue 16): a quantity we set as "0.5" is stored as
"500m", and the apply that is skipped when nothing differs must not see that as a difference, or the
object is applied again on every pass. The canonical forms are the API server's (apimachinery
resource.Quantity, its String() and ParseQuantity tests)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeldeploy_operator.domain.quantity import canonical_quantity, parse_quantity
from modeldeploy_operator.k8s.diff import (
    covers,
    is_quantity_field,
    normalise_quantity,
    unchanged,
    with_applied_hash,
)


@pytest.mark.parametrize(
    ("given_", "stored"),
    [
        # what a user writes in spec.resources, and what the API server gives back
        ("0.5", "500m"),
        (".5", "500m"),
        ("0.50", "500m"),
        ("2000m", "2"),
        ("1500m", "1500m"),
        ("1.0", "1"),
        (2, "2"),
        ("100", "100"),
        ("1000", "1k"),
        ("1000M", "1G"),
        ("1000k", "1M"),
        ("1024Mi", "1Gi"),
        ("2048Mi", "2Gi"),  # a model-cache sizeLimit of 2048 MiB
        ("1088Mi", "1088Mi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1Ki", "1Ki"),
        ("1536", "1536"),  # no suffix: decimal, whatever its factors of 1024
        ("1.5Ki", "1536"),  # binary, but not a whole number of Ki
        ("0.5Ki", "512"),  # binary under 1024 falls back to decimal
        (".001Ki", "1024m"),
        (".000000000001Ki", "2n"),  # rounded up to nano
        ("0.0000000001", "1n"),
        ("1.0000000001", "1000000001n"),
        ("0Mi", "0"),
        ("0.0", "0"),
        ("-0.5", "-500m"),
        ("1e3", "1e3"),  # the exponent form stays an exponent form
        ("1.5e3", "1500"),
        ("300e6", "300e6"),
        ("80e-3", "80e-3"),
        ("1E", "1E"),  # exa, not an exponent
        ("1000E", "1e21"),  # no decimal suffix past E
        ("1024Ei", "1180591620717411303424"),  # no binary suffix past Ei
    ],
)
def test_canonical_quantities(given_: str | int, stored: str) -> None:
    assert canonical_quantity(given_) == stored
    assert canonical_quantity(stored) == stored


@pytest.mark.parametrize("bad", ["", "abc", "1.1.M", "0.1mi", "1i", "1Gb", "Mi", True])
def test_what_is_not_a_quantity_is_refused_and_compared_as_it_is(bad: Any) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        canonical_quantity(bad)
    assert normalise_quantity(bad) == bad


_NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=10**20).map(str),
    st.decimals(min_value=0, max_value=10**12, places=12, allow_nan=False, allow_infinity=False).map(
        lambda d: format(d, "f")
    ),
)
_SUFFIXES = st.sampled_from(
    ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
)
_EXPONENTS = st.integers(min_value=-12, max_value=24).map(lambda e: f"e{e}")


@settings(max_examples=400, deadline=None)
@given(number=_NUMBERS, suffix=st.one_of(_SUFFIXES, _EXPONENTS), negative=st.booleans())
def test_normalising_is_stable_and_keeps_the_value(number: str, suffix: str, negative: bool) -> None:
    text = ("-" if negative else "") + number + suffix
    once = canonical_quantity(text)
    assert canonical_quantity(once) == once  # stored as it comes back: no rewrite of a rewrite
    with localcontext() as exact:
        exact.prec = 200
        value = parse_quantity(text)
        rounded = abs(value).quantize(Decimal("1e-9"), rounding=ROUND_CEILING).copy_sign(value)
        assert parse_quantity(once) == rounded  # the same quantity, to the server's nano precision


@pytest.mark.parametrize(
    ("path", "quantity"),
    [
        (("spec", "template", "spec", "containers", "resources", "requests", "cpu"), True),
        (("spec", "template", "spec", "containers", "resources", "limits", "nvidia.com/gpu"), True),
        (("spec", "template", "spec", "volumes", "emptyDir", "sizeLimit"), True),
        (("spec", "metrics", "resource", "target", "averageValue"), True),
        (("spec", "template", "spec", "containers", "env", "value"), False),
        (("metadata", "labels", "requests"), False),
        (("spec", "requests", "cpu"), False),
        ((), False),
    ],
)
def test_which_fields_are_quantities(path: tuple[str, ...], quantity: bool) -> None:
    assert is_quantity_field(path) is quantity


def deployment(cpu: Any, memory: Any, env: str = "0.5", size_limit: str = "2048Mi") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "env": [{"name": "THRESHOLD", "value": env}],
                            "resources": {
                                "requests": {"cpu": cpu, "memory": memory},
                                "limits": {"memory": memory},
                            },
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": size_limit}}],
                }
            }
        },
    }


def test_a_deployment_the_server_stored_in_canonical_form_is_not_applied_again() -> None:
    desired = with_applied_hash(deployment("0.5", "1024Mi"))
    live = with_applied_hash(deployment("0.5", "1024Mi"))  # the same hash: we applied this manifest
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    live["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = "2Gi"
    assert unchanged(desired, live)


@pytest.mark.parametrize(
    ("field", "live_value"),
    [
        ("cpu", "600m"),  # a different quantity is a difference
        ("env", "500m"),  # an env value is a string: "500m" is not "0.5" there
        ("sizeLimit", "1Gi"),
    ],
)
def test_a_real_difference_still_is_one(field: str, live_value: str) -> None:
    desired = with_applied_hash(deployment("0.5", "1024Mi"))
    live = with_applied_hash(
        deployment(
            live_value if field == "cpu" else "500m",
            "1Gi",
            env=live_value if field == "env" else "0.5",
            size_limit=live_value if field == "sizeLimit" else "2Gi",
        )
    )
    live["metadata"]["annotations"] = desired["metadata"]["annotations"]
    assert not unchanged(desired, live)


def test_quantities_compare_as_the_server_would_store_them() -> None:
    path = ("resources", "requests", "cpu")
    assert covers("500m", "0.5", path)
    assert covers("1", 1, path)
    assert not covers("1G", "1Gi", ("resources", "limits", "memory"))
    # The same bytes in another format (someone else's edit: the server keeps the format it is sent):
    # our apply would store "1073741824" again, so it is a difference, and applying it is harmless.
    assert not covers("1Gi", "1073741824", ("resources", "limits", "memory"))
    assert not covers(None, "1", path)  # a quantity we set that is gone is a difference
    assert not covers("500m", "0.5", ("env", "value"))
