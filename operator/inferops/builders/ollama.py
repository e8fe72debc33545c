"""Builds the Ollama fallback engine: its Deployment, Service and optional cache claim.

The pod pulls the configured tag at start and copies it to the logical model name, so a
request's `model` field is valid on either engine. Ollama loads a model on its first request
(a pause of seconds to minutes that the first consumer would pay), so the pod then loads it
itself, with an empty prompt (Ollama's documented way to load a model), and the startup probe
passes only once that load has returned: the pod is not Ready, and gets no traffic, before the
model is in memory. The load keeps the model for `OLLAMA_KEEP_ALIVE` (forever by default), so
a quiet consumer does not pay a reload either.
"""

from __future__ import annotations

from inferops.api.spec import InferenceBackendSpec, OllamaSpec
from inferops.builders import common
from inferops.builders.common import DEFAULT_IMAGES, Images, Obj, Owner

ENGINE = "ollama"
PORT = 11434
MODELS_DIR = "/root/.ollama"
DEFAULT_CONTEXT_LENGTH = 4096

# Runs in the image's shell. Values come from the environment, never pasted into the script,
# so no spec value can be interpreted by the shell. SIGTERM is forwarded to the server.
START_SCRIPT = """\
set -eu
ollama serve &
server=$!
trap 'kill -TERM "$server"; wait "$server"; exit 0' TERM INT
until ollama list >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { echo "ollama serve exited" >&2; exit 1; }
  sleep 1
done
echo "pulling $INFEROPS_OLLAMA_TAG"
ollama pull "$INFEROPS_OLLAMA_TAG"
ollama cp "$INFEROPS_OLLAMA_TAG" "$INFEROPS_SERVED_MODEL"
echo "loading $INFEROPS_SERVED_MODEL"
ollama run "$INFEROPS_SERVED_MODEL" "" </dev/null >/dev/null
touch "$INFEROPS_LOADED_MARKER"
echo "serving $INFEROPS_OLLAMA_TAG as $INFEROPS_SERVED_MODEL, loaded"
wait "$server"
"""

LOADED_MARKER = "/tmp/inferops-model-loaded"
"""Written once the start script's load returned; in the container's own filesystem, so a
restarted container loads again before it counts as started."""

# Startup: the model was loaded (the marker, not `ollama ps`: with a short keepAlive the model
# may be unloaded again by the time the probe looks, which must not restart the pod).
STARTED_CHECK = 'test -f "$INFEROPS_LOADED_MARKER"'
READY_CHECK = 'ollama show "$INFEROPS_SERVED_MODEL" >/dev/null'
STARTUP_PERIOD_SECONDS = 2


def context_length(spec: InferenceBackendSpec, ollama: OllamaSpec) -> int:
    """Ollama's default context is small and truncates silently: match vLLM's by default."""
    return ollama.context_length or spec.vllm.max_model_len or DEFAULT_CONTEXT_LENGTH


def startup_failures(ollama: OllamaSpec) -> int:
    return max(1, -(-ollama.startup_timeout_seconds // STARTUP_PERIOD_SECONDS))


def environment(spec: InferenceBackendSpec, ollama: OllamaSpec) -> list[common.Obj]:
    assert ollama.model is not None  # the CRD requires it when enabled
    values = {
        "INFEROPS_LOADED_MARKER": LOADED_MARKER,
        "INFEROPS_OLLAMA_TAG": ollama.model,
        "INFEROPS_SERVED_MODEL": spec.model,
        "OLLAMA_CONTEXT_LENGTH": str(context_length(spec, ollama)),
        "OLLAMA_HOST": f"0.0.0.0:{PORT}",
        "OLLAMA_KEEP_ALIVE": ollama.keep_alive,
        "OLLAMA_NUM_PARALLEL": str(ollama.num_parallel),
    }
    if ollama.gpus == 0:
        # The image sets NVIDIA_VISIBLE_DEVICES=all: a CPU pod on a GPU node would otherwise
        # see, and allocate memory on, GPUs that belong to vLLM.
        values["NVIDIA_VISIBLE_DEVICES"] = "void"
    return common.env(values)


def deployment(
    spec: InferenceBackendSpec, ollama: OllamaSpec, owner: Owner, images: Images = DEFAULT_IMAGES
) -> Obj:
    container: Obj = {
        "name": ENGINE,
        "image": ollama.image or images.ollama,
        "command": ["/bin/sh", "-c", START_SCRIPT],
        "env": environment(spec, ollama),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        # Pull and load may take long: no liveness kill before they are done, within the
        # spec's budget.
        "startupProbe": {
            "exec": {"command": ["/bin/sh", "-c", STARTED_CHECK]},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures(ollama),
        },
        "readinessProbe": {
            "exec": {"command": ["/bin/sh", "-c", READY_CHECK]},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": {"path": "/", "port": "http"},
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 4,
        },
        "volumeMounts": [{"name": "cache", "mountPath": MODELS_DIR}],
    }
    if res := common.resources(ollama, ollama.gpus):
        container["resources"] = res
    pod_spec: Obj = {
        "containers": [container],
        "volumes": [common.cache_volume(owner, ENGINE, ollama.cache)],
        **common.scheduling(ollama, ollama.gpus),
    }
    return common.deployment(owner, ENGINE, ollama, pod_spec, grace_seconds=30)


def enabled(spec: InferenceBackendSpec) -> OllamaSpec | None:
    return spec.ollama if spec.ollama is not None and spec.ollama.enabled else None


def children(
    spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES
) -> list[Obj]:
    ollama = enabled(spec)
    if ollama is None:
        return []
    out = [deployment(spec, ollama, owner, images), common.service(owner, ENGINE, PORT)]
    if claim := common.cache_claim(owner, ENGINE, ollama.cache):
        out.insert(0, claim)
    return out
