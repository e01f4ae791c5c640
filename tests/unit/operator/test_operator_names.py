import re

import pytest

from modeldeploy_operator.domain.names import fit_name, revision_name, router_name, stable_service_name

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("deployment", "variant", "revision", "expected"),
    [
        ("churn", "default", "0123456789", "churn-default-0123456789"),
        ("a", "b", "c", "a-b-c"),
    ],
)
def test_short_names_are_plain_concatenations(
    deployment: str, variant: str, revision: str, expected: str
) -> None:
    assert revision_name(deployment, variant, revision) == expected


@pytest.mark.parametrize(
    ("deployment", "variant"),
    [("c" * 40, "v" * 20), ("x" * 40, "default"), ("a-" * 20 + "b", "v-" * 9 + "v")],
)
def test_long_names_fit_63_characters_and_stay_dns_1035(deployment: str, variant: str) -> None:
    name = revision_name(deployment, variant, "0123456789")
    assert len(name) <= 63
    assert DNS_1035.match(name)
    assert name.endswith("-0123456789")  # the revision stays readable


def test_names_are_deterministic_and_distinct() -> None:
    first = revision_name("c" * 40, "v" * 20, "0123456789")
    assert first == revision_name("c" * 40, "v" * 20, "0123456789")
    assert first != revision_name("c" * 40, "v" * 19 + "w", "0123456789")
    assert first != revision_name("c" * 40, "v" * 20, "9876543210")


def test_stable_service_is_the_modeldeployment_name() -> None:
    assert stable_service_name("churn") == "churn"
    assert router_name("churn") == "churn-router"


def test_fit_name_refuses_a_suffix_that_leaves_no_room() -> None:
    with pytest.raises(ValueError, match="no room"):
        fit_name("abc", "s" * 60)
