"""The InferenceBackend API: identity constants, spec and status models, CRD generation.

The pydantic models in `spec` and `status` are the single source of truth: the CRD YAML in
`crds/` is generated from them (`python -m inferops.api.crd`).
"""

GROUP = "inferops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceBackend"
PLURAL = "inferencebackends"
SINGULAR = "inferencebackend"
SHORT_NAMES = ["ib"]
