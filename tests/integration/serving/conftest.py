"""Fixtures for the model server's integration tests (defined in serving_harness)."""

from serving_harness import bundles, module_serve, serve

__all__ = ["bundles", "module_serve", "serve"]
