"""Builds the router: its routing table (a ConfigMap the router watches), its Deployment with
least-privilege RBAC, and one Service per consumer.

A consumer's Service is its stable endpoint: OpenAI clients use port 80, Ollama clients keep
port 11434; both reach the router, which tells consumers apart by the Service name in the Host
header.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from inferops.api import API_VERSION, GROUP, KIND
from inferops.api.grammar import quantity_value
from inferops.api.routing import (
    GENERATION_KINDS,
    KINDS,
    ROUTES_KEY,
    Admission,
    Consumer,
    Engine,
    Engines,
    Kind,
    Mirror,
    RoutingTable,
    Timeouts,
    with_revision,
)
from inferops.api.spec import (
    AdmissionSpec,
    ConsumerSpec,
    InferenceBackendSpec,
    RouterSpec,
    VLLMSpec,
    WorkloadSpec,
)
from inferops.api.vllm_args import settings
from inferops.builders import common, ollama, vllm
from inferops.builders.common import COMPONENT_LABEL, DEFAULT_IMAGES, Images, Obj, Owner

COMPONENT = "router"
PORT = 8080
TABLE_KEY = ROUTES_KEY
PRE_STOP_SECONDS = 5
CONSUMER_LABEL = f"{GROUP}/consumer"
# OpenAI clients expect plain HTTP on 80; Ollama clients were configured with 11434.
SERVICE_PORTS = (("http", 80), ("ollama", 11434))
# The image's user (images/inferops/Dockerfile), as the chart runs the operator: numeric, so
# that runAsNonRoot can be checked, and set here too so that an image without a USER runs
# as it.
USER_ID = 65532
TMP_VOLUME = "tmp"


def security(pod_spec: Obj) -> Obj:
    """`pod_spec` under the restricted Pod Security Standard: non-root, a read-only root
    filesystem, no privilege escalation, no capabilities, the runtime's default seccomp
    profile. The router writes nothing, but HOME and the temporary directory are /tmp in the
    image (a library may want a temporary file): /tmp is a small emptyDir."""
    containers = [
        {
            **c,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": TMP_VOLUME, "mountPath": "/tmp"}],
        }
        for c in pod_spec["containers"]
    ]
    return {
        **pod_spec,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}],
    }


def name(owner: Owner) -> str:
    return common.child_name(owner, COMPONENT)


def service_name(owner: Owner, consumer: ConsumerSpec) -> str:
    return consumer.service_name or f"{owner.name}-{consumer.name}"


def endpoint(owner: Owner, consumer: ConsumerSpec) -> str:
    return f"http://{service_name(owner, consumer)}.{owner.namespace}.svc"


VLLM_SLOTS = 256
"""vLLM's default `max_num_seqs`: the sequences one replica batches at once."""
OLLAMA_WAITING_FACTOR = 4
"""Ollama's default wait room, in multiples of its slots: long enough to absorb a burst,
short enough that a CPU Ollama serves a waiter within a few requests' time."""


def admission(
    limits: AdmissionSpec,
    engine: WorkloadSpec,
    per_replica: int,
    waiting_factor: int,
    workers: int,
) -> Admission:
    """One router process's share of an engine's admission limits. Defaults: `per_replica`
    slots per engine replica, `waiting_factor` times that waiting; a pod's figures are split
    between its worker processes, rounded up (each process admits on its own)."""
    replicas = max(1, engine.replicas if engine.replicas is not None else engine.INITIAL_REPLICAS)
    concurrent = limits.max_concurrent or per_replica * replicas
    waiting = limits.max_waiting if limits.max_waiting is not None else concurrent * waiting_factor
    return Admission(
        max_concurrent=-(-concurrent // workers),
        max_waiting=-(-waiting // workers),
        max_wait_seconds=limits.max_wait_seconds,
    )


POOLING_KINDS: tuple[Kind, ...] = ("embeddings",)
"""What vLLM's pooling runner serves (an embedding model)."""


def vllm_facts(spec: VLLMSpec) -> dict[str, object]:
    """What the router must know of how vLLM is started, read from spec.vllm as vLLM reads
    its arguments: the request kinds it serves (the pooling runner serves embeddings, the
    generation runner chat and completions; `--runner auto`, the default, is taken for the
    generation runner, as every model this operator serves through its chat probes is one),
    whether it honours `tools` (a tool-call parser with auto tool choice) and its longest
    context."""
    args = settings(spec.extra_args)
    pooling = args.get("runner") == "pooling" or args.get("convert") in ("embed", "classify")
    tool_calling = bool(args.get("enable_auto_tool_choice")) and bool(args.get("tool_call_parser"))
    return {
        "kinds": list(POOLING_KINDS if pooling else GENERATION_KINDS),
        "tool_calling": tool_calling,
        "max_model_len": spec.max_model_len,
    }


def embeddings_engine(
    spec: InferenceBackendSpec, owner: Owner, ready: Mapping[str, bool], workers: int
) -> Engine | None:
    """The embeddings deployment as the router sees it (spec.vllm.embeddings): vLLM's
    pooling runner, serving the embeddings kind only."""
    server = spec.vllm.embeddings
    if server is None:
        return None
    return Engine(
        url=common.service_url(owner, vllm.EMBEDDINGS, vllm.PORT),
        ready=ready.get(vllm.EMBEDDINGS, False),
        admission=admission(server.admission, server, VLLM_SLOTS, 1, workers),
        kinds=list(POOLING_KINDS),
        max_model_len=server.max_model_len,
    )


def routing_table(
    spec: InferenceBackendSpec,
    owner: Owner,
    ready: Mapping[str, bool],
    weights: Mapping[str, int] | None = None,
    mirrors: Mapping[str, Mirror] | None = None,
    embeddings: Mapping[str, int] | None = None,
) -> RoutingTable:
    """What the router needs, and nothing else: consumers with their weights and host names,
    the engines' URLs and whether they have Ready pods, and the request limits; stamped with
    its revision.

    `weights` are the live weights the operator decided (a rollout moves them step by step);
    a consumer missing from it gets its spec weight. `mirrors`: the consumers at a shadow
    step, with what the router mirrors of their requests. `embeddings`: with
    spec.vllm.embeddings, each consumer's embeddings weight (0 when missing: vectors move
    only once the operator compared them)."""
    live = weights or {}
    embeddings_live = embeddings or {}
    shadows = mirrors or {}
    count = workers(spec.router)
    ollama_engine = None
    if fallback := ollama.enabled(spec):
        ollama_engine = Engine(
            url=common.service_url(owner, ollama.ENGINE, ollama.PORT),
            ready=ready.get(ollama.ENGINE, False),
            admission=admission(
                fallback.admission, fallback, fallback.num_parallel, OLLAMA_WAITING_FACTOR, count
            ),
            kinds=list(KINDS),  # one Ollama server serves chat, generate and embeddings
        )
    engines = Engines(
        vllm=Engine(
            url=common.service_url(owner, vllm.ENGINE, vllm.PORT),
            ready=ready.get(vllm.ENGINE, False),
            admission=admission(spec.vllm.admission, spec.vllm, VLLM_SLOTS, 1, count),
            **vllm_facts(spec.vllm),
        ),
        ollama=ollama_engine,
        embeddings=embeddings_engine(spec, owner, ready, count),
    )
    consumers = []
    for consumer in spec.consumers:
        svc = service_name(owner, consumer)
        ns = owner.namespace
        hosts = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
        consumers.append(
            Consumer(
                name=consumer.name,
                hosts=hosts,
                weight=live.get(consumer.name, consumer.weight),
                api=consumer.api,
                shadow=shadows.get(consumer.name),
                embeddings_weight=embeddings_live.get(consumer.name, 0)
                if spec.vllm.embeddings is not None
                else None,
            )
        )
    router = spec.router
    timeouts = router.timeouts
    table = RoutingTable(
        model=spec.model,
        aliases=[],
        engines=engines,
        consumers=consumers,
        fallback=router.fallback,
        timeouts=Timeouts(
            connect_seconds=timeouts.connect_seconds,
            first_byte_seconds=timeouts.first_byte_seconds,
            total_seconds=timeouts.total_seconds,
        ),
        max_body_bytes=router.max_body_bytes,
    )
    return with_revision(table)


def config_map(
    spec: InferenceBackendSpec,
    owner: Owner,
    ready: Mapping[str, bool],
    weights: Mapping[str, int] | None = None,
    mirrors: Mapping[str, Mirror] | None = None,
    embeddings: Mapping[str, int] | None = None,
) -> Obj:
    table = routing_table(spec, owner, ready, weights, mirrors, embeddings)
    return common.with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": common.metadata(owner, name(owner), COMPONENT),
            "data": {TABLE_KEY: json.dumps(table.dump(), indent=2, sort_keys=True)},
        }
    )


def weights(
    spec: InferenceBackendSpec,
    owner: Owner,
    ready: Mapping[str, bool],
    weights: Mapping[str, int] | None = None,
    mirrors: Mapping[str, Mirror] | None = None,
    embeddings: Mapping[str, int] | None = None,
) -> list[Obj]:
    """The objects that set the weights with the built-in router (`traffic.router`): the
    routing ConfigMap, when there are consumers."""
    if not spec.consumers:
        return []
    return [config_map(spec, owner, ready, weights, mirrors, embeddings)]


IDENTITY = "inferops-router"
"""The ServiceAccount, Role and RoleBinding the routers of one namespace share."""


def identity(namespace: str, backends: Mapping[str, str]) -> list[Obj]:
    """The routers' identity in `namespace`, for the InferenceBackends `backends` (name to
    uid): a ServiceAccount whose Role may read their routing tables and nothing else. One per
    namespace rather than per router: a new backend then costs one Role write (coalesced
    across backends created together) instead of three new objects. Owned by every one of
    them, so the garbage collector removes it with the last; no backend label, so no backend
    counts it among its own children."""
    owners = [Owner(name, namespace, uid) for name, uid in sorted(backends.items())]
    meta = {
        "name": IDENTITY,
        "namespace": namespace,
        "labels": {
            COMPONENT_LABEL: COMPONENT,
            "app.kubernetes.io/component": common.ROLES[COMPONENT],
            "app.kubernetes.io/managed-by": common.MANAGED_BY,
            "app.kubernetes.io/part-of": "inferops",
        },
        # Not the controller: it has many owners, and one's deletion must not wait for it.
        "ownerReferences": [
            {**common.owner_reference(o), "controller": False, "blockOwnerDeletion": False}
            for o in owners
        ],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [name(o) for o in owners],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": IDENTITY},
            "subjects": [{"kind": "ServiceAccount", "name": IDENTITY, "namespace": namespace}],
        },
    ]


def identity_backends(role: Obj) -> dict[str, str]:
    """The backends (name to uid) a live identity Role was written for: its owners, which
    the garbage collector keeps true as backends are deleted."""
    return {
        ref["name"]: ref["uid"]
        for ref in role["metadata"].get("ownerReferences", [])
        if ref.get("kind") == KIND and ref.get("apiVersion") == API_VERSION
    }


def workers(router: RouterSpec) -> int:
    """Router processes per pod: one per requested core, rounded up (a Python process uses at
    most one core; a fraction of a core still gets its process). Kubernetes takes a CPU limit
    without a request as the request, so this does too; neither set: 1."""
    resources = router.resources
    cpu = resources.requests.get("cpu", resources.limits.get("cpu"))
    if cpu is None:
        return 1
    return max(1, math.ceil(quantity_value(cpu)))


def deployment(spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES) -> Obj:
    router = spec.router
    http = {"path": "/readyz", "port": "http"}
    args = ["--configmap", f"{owner.namespace}/{name(owner)}", "--port", str(PORT)]
    if (count := workers(router)) > 1:
        # Omitted at 1 (the router's default): a router's pods stay as they were, and an
        # operator upgrade does not roll every single-core router.
        args += ["--workers", str(count)]
    container: Obj = {
        "name": COMPONENT,
        "image": router.image or images.router,
        # One image for the operator and the router: its default entrypoint is the operator.
        "command": ["python", "-m", "inferops.router"],
        "args": args,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": http, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Endpoints drop a terminating pod with some lag; the router stops accepting on
        # SIGTERM, so keep serving a few seconds first (kubelet-side sleep, no binary needed).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }
    if res := common.resources(router, 0):
        container["resources"] = res
    pod_spec = security(
        {
            "serviceAccountName": IDENTITY,
            "containers": [container],
            **common.scheduling(router, 0),
        }
    )
    # preStop, then the router's own drain period (25 s) for in-flight streams.
    return common.deployment(
        owner, COMPONENT, router, pod_spec, grace_seconds=PRE_STOP_SECONDS + 30
    )


def consumer_service(owner: Owner, consumer: ConsumerSpec) -> Obj:
    meta = common.metadata(owner, service_name(owner, consumer), COMPONENT)
    meta["labels"] = dict(sorted({**meta["labels"], CONSUMER_LABEL: consumer.name}.items()))
    return common.with_spec_hash(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "ClusterIP",
                "selector": common.selector_labels(owner, COMPONENT),
                "ports": [
                    {"name": port_name, "port": port, "targetPort": "http", "protocol": "TCP"}
                    for port_name, port in SERVICE_PORTS
                ],
            },
        }
    )


def children(
    spec: InferenceBackendSpec, owner: Owner, images: Images = DEFAULT_IMAGES
) -> list[Obj]:
    """Nothing without consumers: the engines alone need no router. The routing ConfigMap,
    which carries the weights, comes from `weights` (the traffic interface's setter)."""
    if not spec.consumers:
        return []
    return [
        deployment(spec, owner, images),
        *(consumer_service(owner, c) for c in spec.consumers),
    ]
