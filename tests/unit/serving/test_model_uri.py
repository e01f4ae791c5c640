"""Model URIs (modeldeploy_contract.model_store): the Azure Blob parser, hostile input, and agreement
with the CRD, whose pattern and CEL rule must accept exactly the URIs the parser accepts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modeldeploy_contract.model_store import (
    AZURE_BLOB_MESSAGE,
    AZURE_BLOB_RULE,
    URI_PATTERN,
    AzureBlobLocation,
    is_azure_blob,
    parse_azure_blob,
)
from modeldeploy_contract.server_settings import ServerSettings
from modeldeploy_serving.errors import BundleError
from modeldeploy_serving.storage import source_for

REPO = Path(__file__).resolve().parents[3]
CRDS = [
    REPO / "crds/modeldeploy.io_modeldeployments.yaml",
    REPO / "charts/modeldeploy/crds/modeldeploy.io_modeldeployments.yaml",
]
BOUNDED = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _model_nodes(node: Any) -> list[dict[str, Any]]:
    """Every schema node holding a `uri` property (spec.model and variants[].model)."""
    found = []
    if isinstance(node, dict):
        if "uri" in node.get("properties", {}):
            found.append(node)
        for value in node.values():
            found += _model_nodes(value)
    elif isinstance(node, list):
        for value in node:
            found += _model_nodes(value)
    return found


def _crd_models() -> list[dict[str, Any]]:
    nodes = [n for crd in CRDS for n in _model_nodes(yaml.safe_load(crd.read_text()))]
    assert len(nodes) == 4  # two models per CRD copy
    return nodes


def test_the_crd_carries_the_pattern_and_rule_of_the_contract() -> None:
    for node in _crd_models():
        assert node["properties"]["uri"]["pattern"] == URI_PATTERN
        rules = [r for r in node["x-kubernetes-validations"] if "blob" in r["rule"]]
        assert rules == [{"rule": AZURE_BLOB_RULE, "message": AZURE_BLOB_MESSAGE, "fieldPath": ".uri"}]


def _python(regex: str) -> re.Pattern[str]:
    # RE2's $ (the API server's) matches only at the very end; Python's also before a final newline.
    return re.compile(regex.replace("$", r"\Z"))


RULE_REGEXES = [_python(r) for r in re.findall(r"matches\('([^']*)'\)", AZURE_BLOB_RULE)]
PATTERN = _python(URI_PATTERN)


def crd_accepts(uri: str) -> bool:
    """The CRD's verdict on model.uri, the CEL rule evaluated as written (!A || (B && C))."""
    host, well_formed, container = (bool(r.search(uri)) for r in RULE_REGEXES)
    return bool(PATTERN.search(uri)) and (not host or (well_formed and container))


def parser_accepts(uri: str) -> bool:
    if not PATTERN.search(uri):
        return False
    if not is_azure_blob(uri):
        return True
    try:
        parse_azure_blob(uri)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "https://acct01.blob.core.windows.net/models/churn/v1",
            AzureBlobLocation("acct01", "blob.core.windows.net", "models", "churn/v1"),
        ),
        (
            "https://acct01.blob.core.windows.net/models",
            AzureBlobLocation("acct01", "blob.core.windows.net", "models", ""),
        ),
        (
            "https://acct01.blob.core.chinacloudapi.cn/m-1-2/a%20b/",
            AzureBlobLocation("acct01", "blob.core.chinacloudapi.cn", "m-1-2", "a b"),
        ),
        (
            "https://abc.blob.core.usgovcloudapi.net/" + "c" * 63 + "/x",
            AzureBlobLocation("abc", "blob.core.usgovcloudapi.net", "c" * 63, "x"),
        ),
    ],
)
def test_well_formed_azure_blob_uris(uri: str, expected: AzureBlobLocation) -> None:
    assert is_azure_blob(uri)
    assert parse_azure_blob(uri) == expected
    assert crd_accepts(uri)


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("http://acct01.blob.core.windows.net/models/x", "must start with https://"),
        ("HTTPS://acct01.blob.core.windows.net/models/x", "must start with https://"),
        ("https://acct01.blob.core.windows.net", "names no container"),
        ("https://acct01.blob.core.windows.net/", "container name ''"),
        ("https://acct01.blob.core.windows.net:443/models/x", "with no port"),
        ("https://user@acct01.blob.core.windows.net/models/x", "account name"),
        ("https://Acct01.blob.core.windows.net/models/x", "account name"),
        ("https://ab.blob.core.windows.net/models/x", "account name"),
        ("https://" + "a" * 25 + ".blob.core.windows.net/models/x", "account name"),
        ("https://acct-01.blob.core.windows.net/models/x", "account name"),
        ("https://a.b.blob.core.windows.net/models/x", "host must end in"),
        ("https://acct01.BLOB.core.windows.net/models/x", "host must end in"),
        ("https://acct01.blob.core.windows.net/Models/x", "container name 'Models'"),
        ("https://acct01.blob.core.windows.net/mo/x", "container name 'mo'"),
        ("https://acct01.blob.core.windows.net/" + "m" * 64, "container name"),
        ("https://acct01.blob.core.windows.net/-models/x", "container name '-models'"),
        ("https://acct01.blob.core.windows.net/models-/x", "container name 'models-'"),
        ("https://acct01.blob.core.windows.net/mod--els/x", "container name 'mod--els'"),
        ("https://acct01.blob.core.windows.net/models/x?sv=2021&sig=abc", "query or a fragment"),
        ("https://acct01.blob.core.windows.net/models/x#frag", "query or a fragment"),
    ],
)
def test_malformed_azure_blob_uris_are_refused_by_name(uri: str, why: str) -> None:
    assert is_azure_blob(uri)
    with pytest.raises(ValueError, match=re.escape(why)) as refused:
        parse_azure_blob(uri)
    assert str(refused.value).startswith(AZURE_BLOB_MESSAGE)
    assert "sig=abc" not in str(refused.value)
    assert not crd_accepts(uri)
    # The model server refuses it before any request, and does not echo a query's values.
    with pytest.raises(BundleError, match=r"an Azure Blob model\.uri must be") as served:
        source_for(uri, ServerSettings())
    assert "sig=abc" not in str(served.value)


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/models/x",
        "https://blob.core.windows.net.example.com/models",
        "https://acct01.blob.core.windows.network/models",
        "https://storage.example.com/acct01.blob.core.windows.net/models",
        "s3://acct01.blob.core.windows.net/models",
    ],
)
def test_other_uris_are_not_azure(uri: str) -> None:
    assert not is_azure_blob(uri)
    assert crd_accepts(uri)


_ACCOUNT = st.text(alphabet="abz09AZ-._@:", max_size=26)
_SUFFIX = st.sampled_from(
    [
        "blob.core.windows.net",
        "blob.core.chinacloudapi.cn",
        "blob.core.usgovcloudapi.net",
        "BLOB.core.windows.net",
        "blob.core.windows.net:443",
        "blob.core.windows.net:",
        "blob.core.windows.org",
        "blob.core.windows.net.evil",
        "",
    ]
)
_SEGMENT = st.text(alphabet="az09-A_./%?# \n\u00e9", max_size=70)
near_azure = st.builds(
    lambda scheme, account, suffix, slash, container, rest: (
        f"{scheme}{account}.{suffix}{slash}{container}{rest}"
    ),
    st.sampled_from(["https://", "http://", "HTTPS://", "https:/", "ftp://"]),
    _ACCOUNT,
    _SUFFIX,
    st.sampled_from(["/", "", "//", "?", "#"]),
    _SEGMENT,
    st.one_of(st.just(""), _SEGMENT.map(lambda s: "/" + s)),
)


@BOUNDED
@given(st.one_of(near_azure, st.text(max_size=120)))
@example("https://acct01.blob.core.windows.net/models\n")
@example("https://acct01.blob.core.windows.net\n")
@example("https://acct01.blob.core.windows.net/mod/els\n")
def test_the_parser_and_the_crd_accept_the_same_uris(uri: str) -> None:
    assert parser_accepts(uri) == crd_accepts(uri), uri
