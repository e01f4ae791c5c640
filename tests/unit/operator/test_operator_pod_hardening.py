"""Serving pods: a bounded model cache; analysis fed only by pods of our own Deployments; no variant
pinning by header unless the spec asks for it."""

from __future__ import annotations

from typing import Any

from modeldeploy_contract.router_config import RouterConfig
from modeldeploy_operator.domain.manifests import build_serving_deployment, cache_size_limit
from modeldeploy_operator.domain.observed import pods_owned_by
from modeldeploy_operator.domain.resource import ModelDeploymentRef
from modeldeploy_operator.domain.revision import resolve_variants
from modeldeploy_operator.domain.router import build_router_config
from modeldeploy_operator.domain.traffic import Arm
from modeldeploy_serving.router.state import build_snapshot, endpoints_lookup

from modeldeploy_builders import make_spec


def _volumes(owner: ModelDeploymentRef, **spec: Any) -> dict[str, Any]:
    (variant,) = resolve_variants("churn", make_spec(**spec))
    deployment = build_serving_deployment(owner, variant, image="img", replicas=1)
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_the_model_cache_has_a_size_limit_that_fits_the_bundles(owner: ModelDeploymentRef) -> None:
    assert _volumes(owner)["model-cache"] == {"name": "model-cache", "emptyDir": {"sizeLimit": "2112Mi"}}
    (variant,) = resolve_variants("churn", make_spec(server={"workers": 3}))
    assert variant.settings.workers == 3
    assert cache_size_limit(variant) == f"{3 * 2048 + 64}Mi"  # each worker may download at once
    assert all("sizeLimit" in v["emptyDir"] for v in _volumes(owner).values())


def _obj(uid: str, owner_uid: str | None, labels: dict[str, str], controller: bool = True) -> dict[str, Any]:
    refs = [{"kind": "X", "name": "x", "uid": owner_uid, "controller": controller}] if owner_uid else []
    return {"metadata": {"uid": uid, "name": uid, "labels": labels, "ownerReferences": refs}}


def test_only_pods_of_our_deployments_replica_sets_count() -> None:
    labels = {"modeldeploy.io/deployment": "churn", "modeldeploy.io/revision": "abc"}
    ours = _obj("dep-1", "md-uid", labels)
    other_deployment = _obj("dep-2", "someone-else", labels)
    replica_sets = [_obj("rs-1", "dep-1", labels), _obj("rs-2", "dep-2", labels)]
    pods = [
        _obj("good", "rs-1", labels),
        _obj("no-owner", None, labels),  # a pod someone created with the right labels
        _obj("other-rs", "rs-2", labels),  # a ReplicaSet of a Deployment that is not ours
        _obj("forged", "rs-unknown", labels),
        _obj("not-controller", "rs-1", labels, controller=False),
    ]
    kept = pods_owned_by(pods, replica_sets, [ours])
    assert [p["metadata"]["uid"] for p in kept] == ["good"]
    assert other_deployment  # listed for the reader: it exists, and its pods still do not count


def _router_config(**traffic: Any) -> RouterConfig:
    owner = ModelDeploymentRef(name="churn", namespace="ml", uid="u")
    spec = make_spec(traffic=traffic) if traffic else make_spec()
    (variant,) = resolve_variants("churn", spec)
    arms = [Arm("default", variant.revision, 10_000)]
    return build_router_config(owner, spec, arms, {}, generation=1)


def test_variant_pinning_by_header_is_off_unless_the_spec_enables_it() -> None:
    assert RouterConfig.model_fields["pin_header"].default is None
    assert _router_config().pin_header is None
    snapshot = build_snapshot(_router_config(), endpoints_lookup({}))
    assert snapshot.pin_header is None  # the router reads no pin header at all
    enabled = _router_config(variantPinHeader="X-QA-Variant")
    assert enabled.pin_header == "X-QA-Variant"
    assert build_snapshot(enabled, endpoints_lookup({})).pin_header == b"x-qa-variant"
