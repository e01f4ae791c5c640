"""The ModelDeployment resource itself: its API coordinates and the owner reference its children carry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modeldeploy_contract.resource import API_VERSION, GROUP, KIND, PLURAL, SHORT_NAME, VERSION

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "SHORT_NAME", "VERSION", "ModelDeploymentRef"]


@dataclass(frozen=True)
class ModelDeploymentRef:
    """Identity of one ModelDeployment: what its children need to name and own themselves."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_object(cls, body: dict[str, Any]) -> ModelDeploymentRef:
        """Read the identity from a ModelDeployment object as the API server returns it."""
        metadata = body["metadata"]
        return cls(name=metadata["name"], namespace=metadata["namespace"], uid=metadata["uid"])

    def owner_reference(self) -> dict[str, Any]:
        """Controller owner reference: garbage collection deletes children with their ModelDeployment.

        blockOwnerDeletion makes foreground deletion wait for children; with the
        OwnerReferencesPermissionEnforcement admission plugin it needs `update` on
        modeldeployments/finalizers, which the chart's RBAC grants.
        """
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
