"""The ModelDeployment resource's API coordinates, shared by the operator and the kubectl plugin."""

from __future__ import annotations

GROUP = "modeldeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SHORT_NAME = "mdep"
