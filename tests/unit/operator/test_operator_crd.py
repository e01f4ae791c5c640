"""The CRD checked offline: structure, examples, schema-level invalid cases, and agreement with the
pydantic models. CEL rules need a real API server; the cluster tests send modeldeploy_crd_cases there."""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from modeldeploy_operator.domain.rollout import plan
from modeldeploy_operator.domain.spec import ModelDeploymentSpec
from modeldeploy_operator.domain.status_model import ModelDeploymentStatus
from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec

from example_manifests import MANIFESTS
from modeldeploy_builders import CRD_PATH, NOW, REPO, make_spec, observed_for
from modeldeploy_crd_cases import INVALID_CASES, valid_manifest

CRD = yaml.safe_load(CRD_PATH.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = [REPO / m for m in MANIFESTS]


def _strict(node: Any) -> Any:
    """The CRD schema as a JSON Schema that also rejects unknown fields (the API server prunes them
    silently; offline we want a typo in an example to fail)."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items() if not key.startswith("x-kubernetes")}
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


VALIDATOR = jsonschema.Draft4Validator(_strict(SCHEMA))


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_identity() -> None:
    names = CRD["spec"]["names"]
    assert CRD["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert (CRD["spec"]["group"], CRD["spec"]["scope"], VERSION["name"]) == (
        "modeldeploy.io",
        "Namespaced",
        "v1alpha1",
    )
    assert names["shortNames"] == ["mdep"]
    assert names["categories"] == ["modeldeploy"]
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns_point_at_declared_status_fields() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Model", "Phase", "Canary", "Ready", "URL", "Revision", "Age"]
    status = SCHEMA["properties"]["status"]["properties"]
    for path in columns.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status


def _needs_description(path: str, node: dict[str, Any]) -> bool:
    if path in {"", ".metadata"} or path.endswith("{}"):
        return False  # the root is described; metadata is Kubernetes'; quantities are map values
    if path.endswith("[]"):
        return node.get("type") == "object"  # scalar items are described by their list
    return True


def test_every_field_is_described() -> None:
    missing = [
        path for path, node in _nodes(SCHEMA) if _needs_description(path, node) and "description" not in node
    ]
    assert missing == []


def test_strings_and_lists_are_bounded_for_cel_cost() -> None:
    unbounded = []
    for path, node in _nodes(SCHEMA):
        if path.startswith((".status.kopf", ".metadata", ".apiVersion", ".kind")):
            continue
        if node.get("type") == "string" and not {"maxLength", "enum", "format"} & node.keys():
            unbounded.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            unbounded.append(path)
    assert unbounded == []


def test_only_kopf_preserves_unknown_fields() -> None:
    preserved = [path for path, node in _nodes(SCHEMA) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".status.kopf"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        VALIDATOR.validate(document)
        ModelDeploymentSpec.model_validate(document["spec"])


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


def test_valid_case_base_is_valid() -> None:
    VALIDATOR.validate(valid_manifest())
    ModelDeploymentSpec.model_validate(valid_manifest()["spec"])


@pytest.mark.parametrize("case", [c for c in INVALID_CASES if c.layer == "schema"], ids=lambda c: c.id)
def test_schema_rejects_invalid_case(case: Any) -> None:
    errors = list(VALIDATOR.iter_errors(case.manifest()))
    assert errors, f"{case.id} was accepted"


def test_a_prometheus_check_takes_no_min_samples_above_one() -> None:
    """The CEL rule's twin in the operator: such a check could never be decided (a query's value counts
    as 1 sample), so it is refused with the same reason rather than held Inconclusive for ever."""
    (case,) = [c for c in INVALID_CASES if c.id == "prometheus-check-with-min-samples"]
    with pytest.raises(InvalidSpecError, match=r"checks\[0\]\.minSamples: minSamples above 1 cannot be met"):
        parse_spec(case.manifest()["spec"])
    for allowed in (0, 1):
        body = case.manifest()
        body["spec"]["rollout"]["analysis"]["checks"][0]["minSamples"] = allowed
        parse_spec(body["spec"])


def test_there_are_many_invalid_cases() -> None:
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES)
    assert sum(c.layer == "cel" for c in INVALID_CASES) >= 12


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside Optional[...] / tuple[..., ...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (types.UnionType, typing.Union, tuple, list):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _disagreements(model: type[BaseModel], schema: dict[str, Any], path: str) -> Iterator[str]:
    if schema.get("type") == "array":
        schema = schema["items"]
    wire = {field.alias or name: field for name, field in model.model_fields.items()}
    declared = set(schema.get("properties", {})) - {"kopf"}
    for name in sorted(set(wire) ^ declared):
        yield f"{path}.{name}: in {'the model' if name in wire else 'the CRD'} only"
    for name in sorted(set(wire) & declared):
        nested = _model_of(wire[name].annotation)
        if nested is not None:
            yield from _disagreements(nested, schema["properties"][name], f"{path}.{name}")


def test_spec_model_and_crd_agree_on_field_names() -> None:
    assert list(_disagreements(ModelDeploymentSpec, SCHEMA["properties"]["spec"], "spec")) == []


def test_status_model_and_crd_agree_on_field_names() -> None:
    assert list(_disagreements(ModelDeploymentStatus, SCHEMA["properties"]["status"], "status")) == []


def test_computed_status_fits_the_status_schema() -> None:
    spec = make_spec()
    status = plan("churn", spec, [observed_for(spec, ready=2)], [], NOW, generation=1).status.to_patch()
    body = copy.deepcopy(valid_manifest()) | {"status": status}
    VALIDATOR.validate(body)


def test_chart_ships_the_same_crd() -> None:
    chart_copy = REPO / "charts" / "modeldeploy" / "crds" / CRD_PATH.name
    assert chart_copy.read_bytes() == CRD_PATH.read_bytes(), "run: cp crds/*.yaml charts/modeldeploy/crds/"


@pytest.mark.parametrize(
    "case", [c for c in INVALID_CASES if c.id.startswith("azure-blob-")], ids=lambda c: c.id
)
def test_the_operator_refuses_what_the_azure_blob_rule_refuses(case: Any) -> None:
    """The operator repeats the CEL rule (a cluster may run an older CRD). The API server's side is
    the cluster test of INVALID_CASES; the rule's agreement with the parser is checked in
    tests/unit/serving/test_model_uri.py."""
    from modeldeploy_operator.domain.validation import InvalidSpecError, parse_spec

    with pytest.raises(InvalidSpecError, match=r"an Azure Blob model\.uri must be"):
        parse_spec(case.manifest()["spec"])


def test_an_azure_blob_uri_passes_the_schema_and_the_operator() -> None:
    from modeldeploy_operator.domain.validation import parse_spec

    body = valid_manifest()
    body["spec"]["model"]["uri"] = "https://acct01.blob.core.windows.net/models/churn/v1"
    VALIDATOR.validate(body)
    assert parse_spec(body["spec"]).model is not None
