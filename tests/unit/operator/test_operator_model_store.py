"""A PersistentVolumeClaim as a model store (issue 13): `pvc://<claim>/<path>`, read by one parser
(modeldeploy_contract.model_store) on both sides, told to the API server by the CRD (a pattern and CEL
rules on model.uri) that must accept exactly the same strings, and mounted read-only by the operator
where the server looks for the bundle. The API server's own answers: test_operator_reconcile.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings

from modeldeploy_contract.model_store import (
    MAX_URI_LENGTH,
    PVC_MOUNT_ROOT,
    PVC_URI_PATTERN,
    PvcLocation,
    StoreURIError,
    parse_pvc_uri,
)
from modeldeploy_operator.domain.manifests import build_serving_deployment
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.spec import ModelDeploymentSpec, ModelRef
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec

from modeldeploy_builders import CRD_PATH
from modeldeploy_crd_cases import INVALID_CASES
from store_uris import pvc_uris, python_accepts

OWNER = ModelDeploymentRef(name="churn", namespace="ml", uid="u-1")
SCHEMA = yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]["properties"]
MODEL_SCHEMAS = {
    "spec.model": SPEC["model"],
    "spec.variants[].model": SPEC["variants"]["items"]["properties"]["model"],
}


# --- the parser ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "claim", "path", "local"),
    [
        ("pvc://models/churn/v2", "models", "churn/v2", "/mnt/models/models/churn/v2"),
        ("pvc://models", "models", "", "/mnt/models/models"),
        (
            "pvc://team-a.models/v_1/2.0/x-y",
            "team-a.models",
            "v_1/2.0/x-y",
            "/mnt/models/team-a.models/v_1/2.0/x-y",
        ),
        ("pvc://m/manifest.json", "m", "manifest.json", "/mnt/models/m/manifest.json"),
        ("pvc://" + "a" * 253 + "/b", "a" * 253, "b", f"{PVC_MOUNT_ROOT}/{'a' * 253}/b"),
    ],
)
def test_a_pvc_uri_names_a_claim_and_a_folder_in_it(uri: str, claim: str, path: str, local: str) -> None:
    found = parse_pvc_uri(uri)
    assert found == PvcLocation(claim, path)
    assert found.local_path == local
    assert found.mount_path == f"/mnt/models/{claim}"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("pvc://", "pvc://<claimName>[/<path>]"),
        ("pvc:///churn", "pvc://<claimName>[/<path>]"),  # no claim
        ("pvc://Models/churn", "DNS-1123 subdomain"),  # upper case
        ("pvc://-models/churn", "DNS-1123 subdomain"),
        ("pvc://models-/churn", "DNS-1123 subdomain"),
        ("pvc://mod..els/churn", "DNS-1123 subdomain"),
        ("pvc://models_x/churn", "DNS-1123 subdomain"),
        ("pvc://models:8080/churn", "DNS-1123 subdomain"),
        ("pvc://user@models/churn", "DNS-1123 subdomain"),
        ("pvc://models/../etc", "not starting with '.'"),
        ("pvc://models/churn/..", "not starting with '.'"),
        ("pvc://models/./churn", "not starting with '.'"),
        ("pvc://models/.hidden", "not starting with '.'"),
        ("pvc://models//churn", "no empty segment"),
        ("pvc://models/churn/", "no trailing '/'"),
        ("pvc://models/", "no trailing '/'"),
        ("pvc://models/churn\n", "pvc://<claimName>[/<path>]"),  # Python's `$` would let this through
        ("pvc://models/chu rn", "pvc://<claimName>[/<path>]"),
        ("pvc://models/churn%2F..", "pvc://<claimName>[/<path>]"),
        ("pvc://models/churn?x=1", "pvc://<claimName>[/<path>]"),
        ("pvc://models/churn#v1", "pvc://<claimName>[/<path>]"),
        ("pvc://models/chürn", "pvc://<claimName>[/<path>]"),
        ("pvc://models\\churn", "pvc://<claimName>[/<path>]"),
        ("pvc://" + "a" * 254 + "/b", "at most 253 characters"),
        ("pvc://m/" + "a" * MAX_URI_LENGTH, f"at most {MAX_URI_LENGTH} characters"),
        ("PVC://models/churn", "not a pvc:// URI"),
        ("s3://models/churn", "not a pvc:// URI"),
    ],
)
def test_bad_pvc_uris_are_refused_with_the_reason(uri: str, why: str) -> None:
    with pytest.raises(StoreURIError, match=re.escape(why)):
        parse_pvc_uri(uri)


def test_the_spec_refuses_a_bad_pvc_uri_built_by_hand() -> None:
    with pytest.raises(ValueError, match=r"model\.uri: a pvc:// URI is"):
        ModelRef.model_validate({"uri": "pvc://models/../x", "version": "1"})
    with pytest.raises(InvalidSpecError):
        parse_spec({"model": {"uri": "pvc://models//x", "version": "1"}})
    assert ModelRef.model_validate({"uri": "pvc://models/x", "version": "1"}).format == "auto"


# --- the CRD says the same ----------------------------------------------------------------------


def _re2(pattern: str, text: str) -> bool:
    """Whether RE2 (the API server's patterns and CEL `matches`) finds `pattern` in `text`: as Python's
    re.search, except that RE2's `$` (no multi-line flag) matches at the very end only, Python's also
    before a trailing newline (the difference an earlier version of this rule missed)."""
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    return re.search(pattern[:-1] + r"\Z", text) is not None


_MATCHES = re.compile(r"self\.uri\.matches\('(?P<re>[^']*)'\)")
_FIND_SIZE = re.compile(r"size\(self\.uri\.find\('(?P<re>[^']*)'\)\) <= (?P<max>\d+)")


def _crd_accepts(schema: dict[str, Any], uri: str) -> bool:
    """model.uri as the CRD judges it: minLength, maxLength, pattern, and the pvc:// CEL rules."""
    field = schema["properties"]["uri"]
    if not field["minLength"] <= len(uri) <= field["maxLength"] or not _re2(field["pattern"], uri):
        return False
    for rule in (r["rule"] for r in schema["x-kubernetes-validations"]):
        if not rule.startswith("!self.uri.startsWith('pvc://') || ") or not uri.startswith("pvc://"):
            continue
        if (m := _MATCHES.search(rule)) is not None:
            if not _re2(m["re"], uri):
                return False
        elif (m := _FIND_SIZE.search(rule)) is not None:
            found = re.search(m["re"], uri)
            if len(found[0] if found else "") > int(m["max"]):
                return False
        else:
            raise AssertionError(f"a pvc:// rule this test does not know: {rule}")
    return True


@pytest.mark.parametrize("where", MODEL_SCHEMAS)
def test_the_crd_rule_is_the_contracts_pattern(where: str) -> None:
    schema = MODEL_SCHEMAS[where]
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert f"!self.uri.startsWith('pvc://') || self.uri.matches('{PVC_URI_PATTERN}')" in rules
    assert "!self.uri.startsWith('pvc://') || size(self.uri.find('^pvc://[^/]*')) <= 259" in rules
    assert schema["properties"]["uri"]["maxLength"] == MAX_URI_LENGTH
    assert schema["required"] == ["uri", "version"]
    assert schema["properties"]["format"] == schema["properties"]["format"] | {
        "enum": ["auto", "xgboost", "onnx"],
        "default": "auto",
    }


@pytest.mark.parametrize("where", MODEL_SCHEMAS)
@settings(max_examples=400, deadline=None)
@given(uri=pvc_uris)
@example(uri="pvc://models/churn\n")
@example(uri="pvc://models/churn/")
@example(uri="pvc://models/../x")
@example(uri="pvc://" + "a" * 253)
@example(uri="pvc://" + "a" * 254)
def test_the_parser_and_the_crd_accept_the_same_pvc_uris(where: str, uri: str) -> None:
    assert python_accepts(uri) is _crd_accepts(MODEL_SCHEMAS[where], uri), uri


@pytest.mark.parametrize("case", [c for c in INVALID_CASES if c.id.startswith("pvc-")], ids=lambda c: c.id)
def test_the_api_servers_bad_pvc_cases_are_refused_by_the_operator_too(case: Any) -> None:
    with pytest.raises(ValueError, match="pvc://"):
        ModelDeploymentSpec.model_validate(case.manifest()["spec"])


def test_the_property_test_would_see_the_trailing_newline() -> None:
    """Python's re.match with the contract's pattern accepts a trailing newline: the reason the parser
    uses fullmatch, and the CRD check above reads `$` as RE2 does."""
    assert re.match(PVC_URI_PATTERN, "pvc://models/churn\n") is not None
    assert not python_accepts("pvc://models/churn\n")
    assert not _crd_accepts(MODEL_SCHEMAS["spec.model"], "pvc://models/churn\n")


# --- the operator mounts the claim ----------------------------------------------------------------


def _pod_spec(uri: str) -> dict[str, Any]:
    spec = parse_spec({"model": {"uri": uri, "format": "onnx", "version": "1"}})
    (variant,) = resolve_variants("churn", spec)
    deployment = build_serving_deployment(OWNER, variant, image="serving:1", replicas=1)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def test_a_pvc_model_store_is_mounted_read_only_where_the_server_reads_it() -> None:
    pod = _pod_spec("pvc://team.models/churn/v2")
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELDEPLOY_SERVER_MODEL_URI"] == "pvc://team.models/churn/v2"
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store")
    assert volume == {
        "name": "model-store",
        "persistentVolumeClaim": {"claimName": "team.models", "readOnly": True},
    }
    mount = next(m for m in container["volumeMounts"] if m["name"] == "model-store")
    assert mount == {"name": "model-store", "mountPath": "/mnt/models/team.models", "readOnly": True}
    # The server's own reading of the URI is that folder, inside the mount.
    from modeldeploy_serving.storage import local_folder

    assert str(local_folder(env["MODELDEPLOY_SERVER_MODEL_URI"])).startswith(mount["mountPath"] + "/")


@pytest.mark.parametrize("uri", ["s3://models/churn/v1", "https://store/churn", "/models/churn", "file:///m"])
def test_other_stores_get_no_claim(uri: str) -> None:
    pod = _pod_spec(uri)
    assert "model-store" not in {v["name"] for v in pod["volumes"]}
    assert "model-store" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}


@pytest.mark.parametrize(
    ("pods", "why"),
    [
        ({"volumes": [{"name": "model-store", "emptyDir": {}}]}, "volumes: model-store is the operator's"),
        (
            {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/mnt/models"}],
            },
            "volumeMounts: /mnt/models is the operator's",
        ),
        (
            {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/mnt/models/team.models"}],
            },
            "volumeMounts: /mnt/models/team.models is the operator's",
        ),
    ],
)
def test_the_model_store_volume_and_mount_are_the_operators(pods: dict[str, Any], why: str) -> None:
    raw = {"model": {"uri": "pvc://team.models/churn", "version": "1"}, "pods": {"serving": pods}}
    with pytest.raises(InvalidSpecError, match=re.escape(why)):
        parse_spec(raw)
