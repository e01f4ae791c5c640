"""Labels and annotations on everything the operator creates.

The recommended `app.kubernetes.io/*` labels for people and tools, and `modeldeploy.io/*` labels for
the operator's own selectors. Selectors use only the `modeldeploy.io/*` labels that never change for
an object: a Deployment's selector is immutable.
"""

from __future__ import annotations

from modeldeploy_contract.resource import GROUP

DEPLOYMENT_LABEL = f"{GROUP}/deployment"
VARIANT_LABEL = f"{GROUP}/variant"
REVISION_LABEL = f"{GROUP}/revision"
INSTANCE_LABEL = f"{GROUP}/controller-instance"
"""On a ModelDeployment: the operator instance (`instanceId`) that manages it; absent: the instance
without an id (Argo Rollouts' `--instance-id` label, the same rule)."""
VERSION_LABEL = "app.kubernetes.io/version"
REVISION_ANNOTATION = f"{GROUP}/revision"
MODEL_URI_ANNOTATION = f"{GROUP}/model-uri"
MODEL_SHA256_ANNOTATION = f"{GROUP}/model-sha256"

MANAGED_BY = "modeldeploy-operator"
PART_OF = "modeldeploy"
SERVER_COMPONENT = "model-server"
ROUTER_COMPONENT = "router"
STREAM_COMPONENT = "stream"
STREAM_REVISION_LABEL = f"{GROUP}/stream-revision"
"""The revision a stream pod runs. Not REVISION_LABEL: stream pods must stay out of the revision's
Service (they serve no REST) and their Deployments out of the rollout planner's observed revisions."""
STREAM_ROLE_LABEL = f"{GROUP}/stream-role"
"""`output` (consumes in the output group, writes the output topic) or `shadow`."""


def common_labels(deployment_name: str, component: str) -> dict[str, str]:
    """Labels every object of one ModelDeployment carries."""
    return {
        "app.kubernetes.io/name": f"modeldeploy-{component}",
        "app.kubernetes.io/instance": deployment_name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        DEPLOYMENT_LABEL: deployment_name,
    }


def revision_selector(deployment_name: str, variant: str, revision: str) -> dict[str, str]:
    """Selects the pods of one (variant, revision); immutable for the Deployment's lifetime."""
    return {DEPLOYMENT_LABEL: deployment_name, VARIANT_LABEL: variant, REVISION_LABEL: revision}


def serving_labels(deployment_name: str, variant: str, revision: str, model_version: str) -> dict[str, str]:
    """All labels of a serving Deployment, its pods, Service and HPA."""
    return {
        **common_labels(deployment_name, SERVER_COMPONENT),
        VERSION_LABEL: model_version,
        **revision_selector(deployment_name, variant, revision),
    }


def router_selector(deployment_name: str) -> dict[str, str]:
    """Selects the router pods of one ModelDeployment (the stable Service's backends, issue 5)."""
    return {DEPLOYMENT_LABEL: deployment_name, "app.kubernetes.io/component": ROUTER_COMPONENT}


def stream_selector(deployment_name: str, variant: str, revision: str, role: str) -> dict[str, str]:
    """Selects the stream pods of one (variant, revision) in one role. The role is part of the
    selector (a Deployment's selector is immutable): a revision switching role gets a new Deployment."""
    return {
        DEPLOYMENT_LABEL: deployment_name,
        VARIANT_LABEL: variant,
        STREAM_REVISION_LABEL: revision,
        STREAM_ROLE_LABEL: role,
    }


def stream_labels(
    deployment_name: str, variant: str, revision: str, role: str, model_version: str
) -> dict[str, str]:
    """All labels of a stream Deployment and its pods."""
    return {
        **common_labels(deployment_name, STREAM_COMPONENT),
        VERSION_LABEL: model_version,
        **stream_selector(deployment_name, variant, revision, role),
    }
