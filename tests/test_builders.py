"""The builders turn a spec into exactly the objects the issue describes."""

from __future__ import annotations

from typing import Any

import pytest

from inferops.builders import Owner, desired_children
from inferops.builders.common import SPEC_HASH_ANNOTATION
from tests.conftest import OWNER, make_spec


def by_kind_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def vllm_deployment(**vllm: Any) -> dict[str, Any]:
    spec = make_spec(vllm={"model": "meta-llama/Llama-3.2-3B-Instruct", **vllm})
    return by_kind_name(desired_children(spec, OWNER))[("Deployment", "llama32-vllm")]


def ollama_deployment(**ollama: Any) -> dict[str, Any]:
    spec = make_spec(ollama={"model": "llama3.2:3b", **ollama})
    return by_kind_name(desired_children(spec, OWNER))[("Deployment", "llama32-ollama")]


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return pod(deployment)["containers"][0]  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_children_of_default_spec() -> None:
    children = desired_children(make_spec(), OWNER)
    assert [(o["kind"], o["metadata"]["name"]) for o in children] == [
        ("Deployment", "llama32-ollama"),
        ("Deployment", "llama32-vllm"),
        ("Service", "llama32-ollama"),
        ("Service", "llama32-vllm"),
    ]
    for obj in children:
        meta = obj["metadata"]
        assert meta["namespace"] == "ai"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "inferops.io/v1alpha1",
                "kind": "InferenceBackend",
                "name": "llama32",
                "uid": "0000-1111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "inferops-operator"
        assert len(meta["annotations"][SPEC_HASH_ANNOTATION]) == 16


def test_builders_are_deterministic_and_hash_tracks_spec() -> None:
    first = desired_children(make_spec(), OWNER)
    assert first == desired_children(make_spec(), OWNER)
    changed = vllm_deployment(maxModelLen=2048)
    assert (
        changed["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        != first[1]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    )


@pytest.mark.parametrize(
    ("vllm", "gpus", "shm"),
    [
        ({}, "1", None),
        ({"tensorParallelSize": 4}, "4", "8Gi"),
        ({"tensorParallelSize": 2, "shmSize": "32Gi"}, "2", "32Gi"),
        ({"tensorParallelSize": 1, "shmSize": "1Gi"}, "1", "1Gi"),
    ],
)
def test_gpus_equal_tensor_parallel_and_shm(
    vllm: dict[str, Any], gpus: str, shm: str | None
) -> None:
    deployment = vllm_deployment(**vllm)
    res = container(deployment)["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == gpus
    assert flag(container(deployment)["args"], "--tensor-parallel-size") == gpus
    volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    if shm is None:
        assert "dshm" not in volumes
    else:
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": shm}
        assert mounts["dshm"] == "/dev/shm"
    tolerations = pod(deployment)["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations


def test_vllm_args_carry_every_managed_flag() -> None:
    args = container(
        vllm_deployment(
            gpuMemoryUtilization=0.85,
            maxModelLen=4096,
            dtype="bfloat16",
            extraArgs=["--enable-prefix-caching"],
        )
    )["args"]
    assert flag(args, "--model") == "meta-llama/Llama-3.2-3B-Instruct"
    assert flag(args, "--served-model-name") == "llama3.2"
    assert flag(args, "--port") == "8000"
    assert flag(args, "--gpu-memory-utilization") == "0.85"
    assert flag(args, "--max-model-len") == "4096"
    assert flag(args, "--dtype") == "bfloat16"
    assert args[-1] == "--enable-prefix-caching"
    assert "--max-model-len" not in container(vllm_deployment())["args"]


def test_vllm_ports_and_probes() -> None:
    c = container(vllm_deployment(startupTimeoutSeconds=1205))
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "command" not in c  # the image's entrypoint is the server
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1205


def test_hf_token_is_referenced_never_copied() -> None:
    c = container(vllm_deployment(hfTokenSecretRef={"name": "hf-token", "key": "token"}))
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    assert [e["name"] for e in c["env"]] == sorted(env)
    assert "HF_TOKEN" not in {e["name"] for e in container(vllm_deployment())["env"]}


@pytest.mark.parametrize(
    ("cache", "claim_name", "claim"),
    [
        (None, None, None),
        (
            {"size": "50Gi"},
            "llama32-vllm-cache",
            {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50Gi"}}},
        ),
        (
            {"size": "1Ti", "storageClassName": "fast", "accessMode": "ReadWriteMany"},
            "llama32-vllm-cache",
            {
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Ti"}},
                "storageClassName": "fast",
            },
        ),
        # "" is Kubernetes' "no class", not the cluster default: passed on as written.
        (
            {"size": "1Gi", "storageClassName": ""},
            "llama32-vllm-cache",
            {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
                "storageClassName": "",
            },
        ),
        ({"existingClaim": "shared-models"}, "shared-models", None),
    ],
)
def test_cache_volume(cache: Any, claim_name: str | None, claim: Any) -> None:
    extra = {"cache": cache} if cache else {}
    spec = make_spec(vllm={"model": "m", **extra})
    objects = by_kind_name(desired_children(spec, OWNER))
    volume = {v["name"]: v for v in pod(objects[("Deployment", "llama32-vllm")])["volumes"]}
    if claim_name is None:
        assert volume["cache"] == {"name": "cache", "emptyDir": {}}
    else:
        assert volume["cache"]["persistentVolumeClaim"] == {"claimName": claim_name}
    pvc = objects.get(("PersistentVolumeClaim", "llama32-vllm-cache"))
    assert (pvc["spec"] if pvc else None) == claim
    mounts = container(objects[("Deployment", "llama32-vllm")])["volumeMounts"]
    assert {"name": "cache", "mountPath": "/root/.cache/huggingface"} in mounts


def test_scheduling_fields_pass_through() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}
                ]
            }
        }
    }
    deployment = vllm_deployment(
        nodeSelector={"pool": "gpu"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
        ],
        affinity=affinity,
        runtimeClassName="nvidia",
        podAnnotations={"prometheus.io/scrape": "true"},
        resources={"requests": {"cpu": "4", "memory": "24Gi"}, "limits": {"memory": "32Gi"}},
        replicas=3,
    )
    spec = pod(deployment)
    assert spec["nodeSelector"] == {"pool": "gpu"}
    assert spec["affinity"] == affinity
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["enableServiceLinks"] is False
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true"
    }
    assert deployment["spec"]["replicas"] == 3
    assert container(deployment)["resources"] == {
        "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
    }
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_services_select_their_engine() -> None:
    objects = by_kind_name(desired_children(make_spec(), OWNER))
    for engine, port in (("vllm", 8000), ("ollama", 11434)):
        svc = objects[("Service", f"llama32-{engine}")]
        deployment = objects[("Deployment", f"llama32-{engine}")]
        assert svc["spec"]["ports"] == [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]
        assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()


@pytest.mark.parametrize(
    ("ollama", "vllm_len", "context", "gpus"),
    [
        ({}, None, "4096", 0),
        ({"keepAlive": "30m"}, 256, "256", 0),
        ({}, 8192, "8192", 0),
        ({"contextLength": 2048}, 8192, "2048", 0),
        ({"gpus": 1}, None, "4096", 1),
    ],
)
def test_ollama_environment(
    ollama: dict[str, Any], vllm_len: int | None, context: str, gpus: int
) -> None:
    vllm: dict[str, Any] = {"model": "m"}
    if vllm_len:
        vllm["maxModelLen"] = vllm_len
    spec = make_spec(vllm=vllm, ollama={"model": "llama3.2:3b", "numParallel": 8, **ollama})
    deployment = by_kind_name(desired_children(spec, OWNER))[("Deployment", "llama32-ollama")]
    c = container(deployment)
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["INFEROPS_OLLAMA_TAG"] == "llama3.2:3b"
    assert env["INFEROPS_SERVED_MODEL"] == "llama3.2"
    assert env["OLLAMA_CONTEXT_LENGTH"] == context
    assert env["OLLAMA_NUM_PARALLEL"] == "8"
    # Never unloaded unless the spec says so: a quiet consumer's next request pays no load.
    assert env["OLLAMA_KEEP_ALIVE"] == ollama.get("keepAlive", "-1")
    assert env["OLLAMA_HOST"] == "0.0.0.0:11434"
    if gpus:
        assert "NVIDIA_VISIBLE_DEVICES" not in env
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
        assert pod(deployment)["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
        assert "resources" not in c and "tolerations" not in pod(deployment)


def test_ollama_pulls_aliases_and_loads_before_ready() -> None:
    c = container(ollama_deployment(startupTimeoutSeconds=600))
    script = c["command"][2]
    env = {e["name"]: e["value"] for e in c["env"]}
    pull = script.index('ollama pull "$INFEROPS_OLLAMA_TAG"')
    alias = script.index('ollama cp "$INFEROPS_OLLAMA_TAG" "$INFEROPS_SERVED_MODEL"')
    # An empty prompt loads the model (kept for OLLAMA_KEEP_ALIVE, forever by default)...
    load = script.index('ollama run "$INFEROPS_SERVED_MODEL" "" </dev/null')
    marked = script.index('touch "$INFEROPS_LOADED_MARKER"')
    assert pull < alias < load < marked < script.rindex('wait "$server"')
    assert env["OLLAMA_KEEP_ALIVE"] == "-1"
    # ...and only once it returned does the pod count as started, so no consumer pays it.
    startup = c["startupProbe"]
    assert startup["exec"]["command"][2] == 'test -f "$INFEROPS_LOADED_MARKER"'
    assert env["INFEROPS_LOADED_MARKER"].startswith("/tmp/")  # the container's, not the cache's
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600
    assert "llama3.2" not in script  # values only through the environment
    assert 'ollama show "$INFEROPS_SERVED_MODEL"' in c["readinessProbe"]["exec"]["command"][2]
    assert c["ports"][0]["containerPort"] == 11434
    assert c["volumeMounts"] == [{"name": "cache", "mountPath": "/root/.ollama"}]


@pytest.mark.parametrize("ollama", [None, {"enabled": False, "model": "x"}])
def test_no_ollama_children_without_fallback(ollama: Any) -> None:
    spec = make_spec(ollama=ollama)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in desired_children(spec, OWNER)}
    assert kinds == {("Deployment", "llama32-vllm"), ("Service", "llama32-vllm")}


def test_owner_namespace_is_used() -> None:
    other = Owner(name="b", namespace="team-x", uid="u")
    assert {o["metadata"]["namespace"] for o in desired_children(make_spec(), other)} == {"team-x"}


def test_images_come_from_the_operator_unless_the_resource_names_one() -> None:
    from inferops.api import crd
    from inferops.builders.common import Images

    images = Images(
        vllm="registry.local/vllm:1",
        ollama="registry.local/ollama:2",
        router="registry.local/inferops:3",
    )

    def image_of(spec: Any, component: str) -> str:
        objects = by_kind_name(desired_children(spec, OWNER, images=images))
        container = objects[("Deployment", f"llama32-{component}")]["spec"]["template"]["spec"]
        return str(container["containers"][0]["image"])

    spec = make_spec(consumers=[{"name": "notes"}])
    assert [image_of(spec, c) for c in ("vllm", "ollama", "router")] == [
        images.vllm,
        images.ollama,
        images.router,
    ]
    pinned = make_spec(consumers=[{"name": "notes"}], vllm={"model": "m", "image": "mine:1"})
    assert image_of(pinned, "vllm") == "mine:1"
    # No image default in the schema: the API server must not write one into stored objects.
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    for engine in ("vllm", "ollama", "router"):
        assert "default" not in schema["spec"]["properties"][engine]["properties"]["image"]
