"""The `spec` of an InferenceBackend: what the user declares.

Rules that the API server can check (ranges, patterns, cross-field CEL rules) live here as
schema, so a bad resource is refused at `kubectl apply` with a message naming the field.
Rules it cannot check live in `inferops.validation`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from inferops.api.affinity import Affinity
from inferops.api.base import Model, cel, cel_rules
from inferops.api.grammar import (
    CONFIG_KEY_PATTERN,
    DNS_1035_PATTERN,
    DNS_LABEL_PATTERN,
    INT32_MAX,
    LABEL_KEY_PATTERN,
    AnnotationMap,
    Image,
    KeepAlive,
    LabelMap,
    LabelValue,
    ObjectName,
    PositiveQuantity,
    ResourceList,
    StorageClassName,
    quantity_value,
)
from inferops.api.migration import Migration
from inferops.api.vllm_args import FIELD, extra_args_cel_rules, generation_runner, refusals

# Child names the operator derives from the resource's name; a consumer may not take them.
RESERVED_CONSUMER_NAMES = ("vllm", "ollama", "router")

# A name that is valid both as vLLM's --served-model-name and as an Ollama model name
# (`ollama cp` target): optional namespace segments and an optional `:tag`.
MODEL_NAME_PATTERN = (
    r"^[a-zA-Z0-9][a-zA-Z0-9._-]*(/[a-zA-Z0-9][a-zA-Z0-9._-]*)*(:[a-zA-Z0-9_][a-zA-Z0-9._-]*)?$"
)

# A Hugging Face repository id (`org/name`, the Hub's own character set), or an absolute path.
HF_MODEL_PATTERN = r"^(/[^\s]+|[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)$"


class SecretKeyRef(Model):
    """A key of a Secret in the resource's namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)] = "token"
    """Key inside the Secret whose value is used: letters, digits, '-', '_' and '.', not '.'
    and not starting with '..'."""


class CacheSpec(Model):
    """Persistent storage for downloaded model files, so a restart does not download again."""

    model_config = cel_rules(
        cel(
            "has(self.size) != has(self.existingClaim)",
            "set exactly one of size (the operator creates a PersistentVolumeClaim) "
            "or existingClaim (use a claim you manage)",
        )
    )

    size: PositiveQuantity | None = None
    """Size of a PersistentVolumeClaim the operator creates and owns (e.g. `50Gi`), more
    than zero."""
    storage_class_name: StorageClassName | None = None
    """StorageClass of the created claim (a DNS subdomain); the cluster default when omitted,
    none when empty (the claim then binds only to a volume without a class)."""
    access_mode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"] = "ReadWriteOnce"
    """Access mode of the created claim; use ReadWriteMany when replicas share one cache."""
    existing_claim: ObjectName | None = None
    """Name of an existing PersistentVolumeClaim to mount instead of creating one."""

    @model_validator(mode="after")
    def _one_source(self) -> CacheSpec:
        # Mirrors the CEL rule, for objects stored before the CRD carried it.
        if (self.size is None) == (self.existing_claim is None):
            raise ValueError("set exactly one of cache.size or cache.existingClaim")
        return self


class Toleration(Model):
    """A Kubernetes pod toleration."""

    model_config = cel_rules(
        cel(
            "(has(self.key) && self.key != '') || "
            "(has(self.operator) && self.operator == 'Exists')",
            "a toleration without key must have operator Exists (it then tolerates every taint)",
        ),
        cel(
            "!(has(self.operator) && self.operator == 'Exists' && has(self.value))",
            "value must be empty with operator Exists",
            ".value",
        ),
        cel(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds applies to effect NoExecute only",
            ".tolerationSeconds",
        ),
    )

    key: Annotated[str | None, Field(max_length=253, pattern=f"^$|{LABEL_KEY_PATTERN}")] = None
    """Taint key the toleration applies to (a label key); empty with operator Exists matches
    all taints."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (the default)."""
    value: LabelValue | None = None
    """Taint value to match with operator Equal (a label value)."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; all effects when empty."""
    toleration_seconds: Annotated[int | None, Field(ge=0, le=INT32_MAX)] = None
    """How long a NoExecute taint is tolerated before eviction (0: evicted at once)."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> Toleration:
        # Mirrors the CEL rules, which are Kubernetes' own checks of a pod's tolerations.
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without key must have operator Exists")
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("value must be empty with operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies to effect NoExecute only")
        return self


class Resources(Model):
    """Compute resources of the engine container (CPU, memory, ephemeral storage)."""

    model_config = cel_rules(
        cel(
            "self.requests.all(k, !(k in self.limits) || !isQuantity(string(self.requests[k])) "
            "|| !isQuantity(string(self.limits[k])) || "
            "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
            "a request may not exceed the limit of the same resource: lower requests or raise "
            "limits",
            ".requests",
        )
    )

    requests: ResourceList = {}
    """Minimum resources the scheduler reserves: cpu, memory, ephemeral-storage."""
    limits: ResourceList = {}
    """Maximum resources the container may use: cpu, memory, ephemeral-storage; each at
    least its request."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        # Mirrors the CEL rule, which is Kubernetes' own check of a container's resources.
        over = [
            f"requests.{name} {amount} is over limits.{name} {self.limits[name]}"
            for name, amount in self.requests.items()
            if name in self.limits and quantity_value(amount) > quantity_value(self.limits[name])
        ]
        if over:
            raise ValueError(f"{'; '.join(over)}: lower requests or raise limits")
        return self


class WorkloadSpec(Model):
    """Fields shared by both engines' Deployments: size and placement of the pods."""

    INITIAL_REPLICAS: ClassVar[int] = 1
    """Pods of a Deployment created while `replicas` is unset."""

    replicas: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Number of pods, kept by the operator (a `kubectl scale` is reverted). Leave it unset
    to scale with a HorizontalPodAutoscaler or `kubectl scale`: the Deployment is then
    created with 1 pod and the operator never writes its replicas again."""
    resources: Resources = Resources()
    """CPU, memory and other resources; GPUs are set by the engine's GPU field."""
    node_selector: LabelMap = {}
    """Node labels the pods must run on (label keys and values)."""
    tolerations: Annotated[list[Toleration], Field(max_length=64)] = []
    """Tolerations added to the pods (a GPU toleration is added automatically)."""
    affinity: Affinity | None = None
    """A Kubernetes pod affinity (nodeAffinity, podAffinity, podAntiAffinity), checked by
    Kubernetes' rules for a pod's affinity."""
    runtime_class_name: ObjectName | None = None
    """RuntimeClass of the pods, e.g. `nvidia` on clusters without a default GPU runtime."""
    pod_annotations: AnnotationMap = {}
    """Extra annotations on the pods (annotation keys, any values)."""


class AdmissionSpec(Model):
    """How many requests the router lets through to this engine at once, and how many may
    wait for a slot and for how long; beyond that a request is refused at once (HTTP 503
    with `Retry-After`, in the dialect of the API it used) instead of queueing on the engine.
    The limits apply in each router pod (each router process with several workers gets its
    share, rounded up), for the engine as a whole."""

    max_concurrent: Annotated[int | None, Field(ge=1, le=100000)] = None
    """Requests under way on the engine at once. When omitted: vLLM 256 (vLLM's default
    max_num_seqs) per vLLM replica; Ollama numParallel per Ollama replica, so requests wait
    in the router, where the wait is bounded, not in Ollama, where it is not."""
    max_waiting: Annotated[int | None, Field(ge=0, le=100000)] = None
    """Requests that may wait for a slot; one more is refused at once. When omitted: vLLM as
    many as maxConcurrent, Ollama 4 times maxConcurrent."""
    max_wait_seconds: Annotated[float, Field(gt=0, le=3600)] = 10
    """The longest a request waits for a slot before it is refused."""


# The extended resource of NVIDIA GPUs (device plugin); requested by vLLM and GPU Ollama pods.
GPU = "nvidia.com/gpu"


class VLLMServerSpec(WorkloadSpec):
    """What every vLLM Deployment of the resource shares: the model, the image and how vLLM
    is started."""

    model: Annotated[str, Field(min_length=1, max_length=512, pattern=HF_MODEL_PATTERN)]
    """Hugging Face model id (e.g. `meta-llama/Llama-3.2-3B-Instruct`) or an absolute path on
    the cache volume (e.g. `/root/.cache/huggingface/my-model`), without spaces."""
    image: Image | None = None
    """vLLM container image; its entrypoint must be the API server (as in vllm/vllm-openai).
    The operator's default (its configuration) when omitted."""
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """GPUs per pod; the pod requests and limits this many `nvidia.com/gpu`."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Fraction of each GPU's memory vLLM may use (weights, activations and KV cache)."""
    max_model_len: Annotated[int | None, Field(ge=1, le=INT32_MAX)] = None
    """Maximum context length (prompt plus output) in tokens; the model's own when omitted."""
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = "auto"
    """Data type of weights and activations."""
    extra_args: Annotated[
        list[
            Annotated[
                str,
                Field(
                    max_length=1024,
                    json_schema_extra={"x-kubernetes-validations": extra_args_cel_rules()},
                ),
            ]
        ],
        Field(max_length=64),
    ] = []
    """More vLLM command-line arguments, one item per word (e.g. `--max-num-seqs`, `64`).
    An item vLLM would read as a flag the operator manages, in any spelling (`_` for `-`, a
    prefix, a short alias), is refused with the field to use instead, and so is an item
    holding several words."""
    cache: CacheSpec | None = None
    """Persistent Hugging Face cache; an emptyDir (lost on restart) when omitted."""
    startup_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 1800
    """How long a pod may take to load the model before it is restarted."""
    admission: AdmissionSpec = AdmissionSpec()
    """The router's limit of requests to this vLLM (overload is refused, not queued)."""

    # Where `extraArgs` sits in the spec, for the messages of refused items.
    EXTRA_ARGS_FIELD: ClassVar[str] = FIELD

    @field_validator("extra_args")
    @classmethod
    def _read_as_vllm_does(cls, extra_args: list[str]) -> list[str]:
        if problems := refusals(extra_args, cls.EXTRA_ARGS_FIELD):
            # The messages name the item (`spec.vllm.extraArgs[i]`), a finer place than the
            # field's own location, which describe_errors then leaves out.
            raise PydanticCustomError(
                "vllm_extra_args", "{problems}", {"problems": "; ".join(problems)}
            )
        return extra_args


EMBEDDINGS_FIELD = "spec.vllm.embeddings.extraArgs"


class VLLMEmbeddingsSpec(VLLMServerSpec):
    """A second vLLM Deployment that serves embeddings: vLLM's pooling runner (`--runner
    pooling`, set by the operator) with an embedding model, answering to spec.model like the
    others. The router sends a consumer's embeddings requests to it by the consumer's own
    embeddings weight, which moves 0 -> 100 once both engines' vectors agree
    (spec.migration.embeddings); chat and completions stay with spec.vllm. The Hugging Face
    token is spec.vllm.hfTokenSecretRef's."""

    EXTRA_ARGS_FIELD: ClassVar[str] = EMBEDDINGS_FIELD

    @model_validator(mode="after")
    def _pooling_runner(self) -> VLLMEmbeddingsSpec:
        if problem := generation_runner(self.extra_args):
            raise PydanticCustomError(
                "vllm_embeddings_runner",
                "{field}: {problem}; an embeddings deployment runs vLLM's pooling runner: "
                "remove it (the operator passes --runner pooling), or serve generation "
                "with spec.vllm",
                {"field": EMBEDDINGS_FIELD, "problem": problem},
            )
        return self


class VLLMSpec(VLLMServerSpec):
    """The vLLM engine: an OpenAI-compatible server on GPUs."""

    hf_token_secret_ref: SecretKeyRef | None = None
    """Secret holding a Hugging Face token, for gated models. Injected as HF_TOKEN with
    valueFrom, never copied."""
    shm_size: PositiveQuantity | None = None
    """Size of the memory-backed /dev/shm, more than zero; defaults to 8Gi when
    tensorParallelSize > 1, where NCCL needs it."""
    embeddings: VLLMEmbeddingsSpec | None = None
    """A vLLM Deployment of an embedding model (the pooling runner) for the consumers'
    embeddings requests, with its own Service; without it, embeddings go to Ollama (or to
    this vLLM when its extraArgs start the pooling runner)."""


class OllamaSpec(WorkloadSpec):
    """The Ollama fallback engine, serving the same logical model."""

    model_config = cel_rules(
        cel(
            "!self.enabled || has(self.model)",
            "model is required when the fallback is enabled (an Ollama tag such as "
            "llama3.2:3b); or set enabled: false",
            ".model",
        )
    )

    enabled: bool = True
    """Run the Ollama fallback."""
    model: Annotated[
        str | None, Field(min_length=1, max_length=256, pattern=MODEL_NAME_PATTERN)
    ] = None
    """Ollama tag pulled at start (e.g. `llama3.2:3b`) and aliased to spec.model."""
    image: Image | None = None
    """Ollama container image; the operator's default (its configuration) when omitted."""
    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    """GPUs per pod; 0 runs on CPU and hides every GPU of the node from the container."""
    num_parallel: Annotated[int, Field(ge=1, le=256)] = 4
    """Requests served in parallel per model (OLLAMA_NUM_PARALLEL); the router's default
    admission limit for Ollama follows it."""
    keep_alive: KeepAlive = "-1"
    """How long the model stays loaded after its last request (OLLAMA_KEEP_ALIVE): `-1`
    (the default) keeps it loaded for good, as vLLM does, so a quiet consumer's next request
    never waits for a load; or a Go duration such as `30m` or `1h30m`. The pod loads the
    model before it counts as Ready either way."""
    context_length: Annotated[int | None, Field(ge=1, le=INT32_MAX)] = None
    """Context length in tokens (OLLAMA_CONTEXT_LENGTH); defaults to spec.vllm.maxModelLen,
    then 4096, so a prompt fits both engines alike. Ollama silently truncates longer
    prompts."""
    startup_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 1800
    """How long a pod may take to pull and load the model before it is restarted."""
    admission: AdmissionSpec = AdmissionSpec()
    """The router's limit of requests to Ollama (overload is refused, not queued)."""
    cache: CacheSpec | None = None
    """Persistent storage for pulled models; an emptyDir (pulled again on restart) when
    omitted."""

    @model_validator(mode="after")
    def _model_when_enabled(self) -> OllamaSpec:
        if self.enabled and self.model is None:
            raise ValueError("ollama.model is required when the fallback is enabled")
        return self


class ConsumerSpec(Model):
    """A service that calls the model. Each gets its own Service in front of the router, and
    its own share of traffic on vLLM."""

    model_config = cel_rules(
        cel(
            "self.api != 'embeddings' || self.weight == 0 || self.weight == 100",
            "an embeddings consumer moves at weight 0 or 100 only: vectors from two different "
            "models are not comparable",
            ".weight",
        ),
        cel(
            "!(self.name in " + str(list(RESERVED_CONSUMER_NAMES)) + ")",
            "name may not be " + ", ".join(RESERVED_CONSUMER_NAMES) + ": the engines' "
            "Services use those suffixes",
            ".name",
        ),
    )

    name: Annotated[str, Field(min_length=1, max_length=40, pattern=DNS_LABEL_PATTERN)]
    """The consumer's name, e.g. `notes`."""
    weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Percent of this consumer's requests sent to vLLM; the rest go to Ollama."""
    service_name: Annotated[
        str | None, Field(min_length=1, max_length=63, pattern=DNS_1035_PATTERN)
    ] = None
    """Name of the consumer's Service; `<resource name>-<consumer name>` when omitted."""
    api: Literal["chat", "embeddings"] = "chat"
    """What the consumer calls: chat (and completions) or embeddings."""

    @model_validator(mode="after")
    def _mirror_cel(self) -> ConsumerSpec:
        # Mirrors the CEL rules, for objects stored before the CRD carried them.
        if self.name in RESERVED_CONSUMER_NAMES:
            raise ValueError(f"consumer name may not be {self.name}")
        if self.api == "embeddings" and self.weight not in (0, 100):
            raise ValueError("an embeddings consumer moves at weight 0 or 100 only")
        return self


class RouterTimeouts(Model):
    """Limits on one request through the router."""

    connect_seconds: Annotated[float, Field(gt=0, le=60)] = 2
    """Time to connect to an engine."""
    first_byte_seconds: Annotated[float, Field(gt=0, le=3600)] = 60
    """Time to the engine's first response byte; past it vLLM counts as failed."""
    total_seconds: Annotated[float, Field(gt=0, le=86400)] = 600
    """Time for a whole request, streaming included."""


class RouterSpec(WorkloadSpec):
    """The router in front of both engines: one endpoint per consumer, a weighted split, and
    fallback to Ollama."""

    INITIAL_REPLICAS: ClassVar[int] = 2

    replicas: Annotated[int | None, Field(ge=0, le=1000)] = None
    """Number of router pods, kept by the operator (a `kubectl scale` is reverted). Leave it
    unset to scale with a HorizontalPodAutoscaler or `kubectl scale`: the Deployment is
    then created with 2 pods and the operator never writes its replicas again."""
    image: Image | None = None
    """Router container image; the operator's default (its configuration) when omitted."""
    fallback: bool = True
    """Retry a request on Ollama when vLLM fails before the first byte reached the client."""
    timeouts: RouterTimeouts = RouterTimeouts()
    """Connect, first-byte and total timeouts."""
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 10 << 20
    """Largest request body accepted; larger ones get 413."""


class InferenceBackendSpec(Model):
    """One logical model served by vLLM on GPUs with an Ollama fallback."""

    model: Annotated[str, Field(min_length=1, max_length=128, pattern=MODEL_NAME_PATTERN)]
    """The model name consumers put in requests (e.g. `llama3.2`); both engines answer to it."""
    vllm: VLLMSpec
    """The vLLM deployment."""
    ollama: OllamaSpec | None = None
    """The Ollama fallback deployment; no fallback when omitted."""
    consumers: Annotated[
        list[ConsumerSpec],
        Field(
            max_length=64,
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(
                        "self.all(c, self.exists_one(d, d.name == c.name))",
                        "consumer names must be unique",
                    ),
                    cel(
                        "self.all(c, !has(c.serviceName) || "
                        "self.exists_one(d, has(d.serviceName) && d.serviceName == c.serviceName))",
                        "consumer serviceNames must be unique",
                    ),
                ]
            },
        ),
    ] = []
    """The services that call the model, in migration order."""
    router: RouterSpec = RouterSpec()
    """The router; created when there is at least one consumer."""
    migration: Migration | None = None
    """Move the consumers from Ollama to vLLM in steps, judged on live figures, one after
    another; the operator then owns each consumer's live weight and `consumers[].weight` is
    ignored. Without it, each consumer's weight is applied as written."""

    @field_validator("consumers")
    @classmethod
    def _unique_consumers(cls, consumers: list[ConsumerSpec]) -> list[ConsumerSpec]:
        names = [c.name for c in consumers]
        if len(set(names)) != len(names):
            raise ValueError("consumer names must be unique")
        # Mirrors the CEL rule, for objects stored before the CRD carried it.
        services = [c.service_name for c in consumers if c.service_name is not None]
        if len(set(services)) != len(services):
            raise ValueError("consumer serviceNames must be unique")
        return consumers


__all__ = [
    "AdmissionSpec",
    "CacheSpec",
    "ConsumerSpec",
    "InferenceBackendSpec",
    "OllamaSpec",
    "Resources",
    "RouterSpec",
    "SecretKeyRef",
    "Toleration",
    "VLLMEmbeddingsSpec",
    "VLLMServerSpec",
    "VLLMSpec",
]
