"""End-to-end test support: tooling that runs the operator against a real API server."""
