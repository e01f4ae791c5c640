"""The operator's pure core: spec and status models, revision hashing, names, labels, manifests.

No I/O and no Kubernetes client here (import-linter enforces it): every function maps values to
values, so the whole reconcile logic is unit-tested without a cluster. The Kubernetes client layer
(`modeldeploy_operator.k8s`) applies what these functions build; the kopf handlers wire both.
"""

from .conditions import find_condition, is_true, remove_condition, set_condition
from .manifests import build_hpa, build_serving_deployment, build_serving_service, build_stable_service
from .names import revision_name, router_name, stable_service_name
from .observed import ObservedDeployment
from .resource import ModelDeploymentRef
from .revision import ResolvedVariant, resolve_variant, resolve_variants, revision_hash, server_settings_for
from .spec import ModelDeploymentSpec
from .status import status_for_invalid_spec, with_error
from .status_model import ModelDeploymentStatus
from .validation import InvalidSpecError, parse_spec, validate_name, validate_spec

__all__ = [
    "InvalidSpecError",
    "ModelDeploymentRef",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ObservedDeployment",
    "ResolvedVariant",
    "build_hpa",
    "build_serving_deployment",
    "build_serving_service",
    "build_stable_service",
    "find_condition",
    "is_true",
    "parse_spec",
    "remove_condition",
    "resolve_variant",
    "resolve_variants",
    "revision_hash",
    "revision_name",
    "router_name",
    "server_settings_for",
    "set_condition",
    "stable_service_name",
    "status_for_invalid_spec",
    "validate_name",
    "validate_spec",
    "with_error",
]
