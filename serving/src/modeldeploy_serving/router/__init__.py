"""The built-in router: sticky weighted split, shadow traffic and per-arm metrics in front of the
model servers of one ModelDeployment. See docs/router.md."""
