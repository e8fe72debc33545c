"""What the unit tier (tests/), the e2e tier (e2e/) and the benchmarks (bench/) share: process
management, free ports, the read-only root guard, the generated InferenceBackend specs, the
in-process engine stand-in and the in-memory Kubernetes API. Neither tier imports the other
(an import-linter contract in `make lint`): what both need lives here."""
