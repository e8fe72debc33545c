"""The spec refuses what Kubernetes would refuse in the children built from it: requests
above limits, negative or zero quantities, resource names, storage class and label grammars,
tolerations, and a typed affinity checked by Kubernetes' own rules. Each refusal names the
field; what Kubernetes accepts is accepted and reaches the children as written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from inferops.api.grammar import INT64_MAX, quantity_value
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import desired_children
from inferops.validation import describe_errors
from tests.conftest import OWNER

VLLM = {"model": "m"}


def refusal(**sections: Any) -> str:
    """The model's message for a spec with these sections (vllm defaults to a minimal one)."""
    raw = {"model": "x", "vllm": VLLM, **sections}
    with pytest.raises(ValidationError) as caught:
        InferenceBackendSpec.model_validate(raw)
    return describe_errors(caught.value)


def accepted(**sections: Any) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate({"model": "x", "vllm": VLLM, **sections})


def pod_spec(spec: InferenceBackendSpec, component: str = "vllm") -> dict[str, Any]:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in desired_children(spec, OWNER)}
    return dict(objects[("Deployment", f"llama32-{component}")]["spec"]["template"]["spec"])


# -- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1536 * 2**20)),
        ("100m", Decimal("0.1")),
        ("1e3", Decimal(1000)),
        ("+1", Decimal(1)),
        (".5", Decimal("0.5")),
        ("2E", Decimal(2 * 10**18)),
        (7, Decimal(7)),
        # Rounded up to a billionth, as the API server does.
        ("0.0000000001", Decimal("1e-9")),
        # A binary amount is capped at 2^63-1, as the API server does: 9000Ei compares equal
        # to 8Ei there, and must here too.
        ("9000Ei", Decimal(INT64_MAX)),
        ("-1Mi", Decimal(-(2**20))),
    ],
)
def test_quantities_read_as_the_api_server_reads_them(quantity: Any, value: Decimal) -> None:
    assert quantity_value(quantity) == value


@pytest.mark.parametrize("section", ["vllm", "ollama", "router"])
def test_a_request_above_its_limit_is_refused_in_every_workload(section: str) -> None:
    base = {"vllm": VLLM, "ollama": {"model": "llama3.2:3b"}, "router": {}}[section]
    resources = {"requests": {"memory": "1025Mi", "cpu": "500m"}, "limits": {"memory": "1Gi"}}
    message = refusal(**{section: {**base, "resources": resources}})
    assert f"spec.{section}.resources" in message
    assert "requests.memory 1025Mi is over limits.memory 1Gi" in message
    assert "lower requests or raise limits" in message


@pytest.mark.parametrize(
    "resources",
    [
        {"requests": {"memory": "1024Mi"}, "limits": {"memory": "1Gi"}},  # equal, other units
        {"requests": {"cpu": "1000m"}, "limits": {"cpu": 1}},
        {"requests": {"cpu": "8", "memory": "64Gi"}},  # no limits
        {"limits": {"ephemeral-storage": "10Gi"}},
        {"requests": {"cpu": 0}, "limits": {"cpu": "0"}},
    ],
)
def test_requests_within_their_limits_are_accepted(resources: dict[str, Any]) -> None:
    spec = accepted(vllm={**VLLM, "resources": resources})
    container = pod_spec(spec)["containers"][0]
    for kind, amounts in resources.items():
        for name, amount in amounts.items():
            assert container["resources"][kind][name] == str(amount)


@pytest.mark.parametrize(
    ("vllm", "field", "words"),
    [
        (
            {"resources": {"requests": {"cpu": "-1"}}},
            "spec.vllm.resources.requests.cpu",
            "is negative",
        ),
        (
            {"resources": {"limits": {"memory": -5}}},
            "spec.vllm.resources.limits.memory",
            "is negative",
        ),
        ({"resources": {"limits": {"cpu": 2**63}}}, "spec.vllm.resources.limits.cpu", "too large"),
        (
            {"resources": {"limits": {"cpu": "1e999"}}},
            "spec.vllm.resources.limits.cpu",
            "not a Kubernetes quantity",
        ),
        ({"shmSize": "0"}, "spec.vllm.shmSize", "must be greater than zero"),
        ({"shmSize": "-8Gi"}, "spec.vllm.shmSize", "must be greater than zero"),
        ({"cache": {"size": 0}}, "spec.vllm.cache.size", "must be greater than zero"),
        ({"cache": {"size": "0.0Gi"}}, "spec.vllm.cache.size", "must be greater than zero"),
        ({"cache": {"size": "-50Gi"}}, "spec.vllm.cache.size", "must be greater than zero"),
    ],
)
def test_negative_and_zero_quantities_are_refused(
    vllm: dict[str, Any], field: str, words: str
) -> None:
    message = refusal(vllm={**VLLM, **vllm})
    assert field in message and words in message, message


def test_sizes_above_zero_are_accepted() -> None:
    spec = accepted(
        vllm={**VLLM, "shmSize": "0.5Gi", "cache": {"size": 1}},
        ollama={"model": "llama3.2:3b", "cache": {"size": "100Mi"}},
    )
    objects = {(o["kind"], o["metadata"]["name"]): o for o in desired_children(spec, OWNER)}
    claims = {
        name: o["spec"]["resources"]["requests"]["storage"]
        for (kind, name), o in objects.items()
        if kind == "PersistentVolumeClaim"
    }
    assert claims == {"llama32-vllm-cache": "1", "llama32-ollama-cache": "100Mi"}
    shm = next(v for v in pod_spec(spec)["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "0.5Gi"}


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "hugepages-2Mi", "bogus", "CPU"])
@pytest.mark.parametrize("section", ["vllm", "ollama", "router"])
def test_only_cpu_memory_and_ephemeral_storage_may_be_named(name: str, section: str) -> None:
    base = {"vllm": VLLM, "ollama": {"model": "llama3.2:3b"}, "router": {}}[section]
    message = refusal(**{section: {**base, "resources": {"limits": {name: 1}}}})
    assert f"spec.{section}.resources.limits" in message
    assert "set GPUs with vllm.tensorParallelSize" in message


# -- names and grammars ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Fast_SSD", "a..b", "-fast", "fast-", "x" * 254, "a b"])
def test_a_storage_class_name_must_be_a_dns_subdomain(name: str) -> None:
    message = refusal(vllm={**VLLM, "cache": {"size": "1Gi", "storageClassName": name}})
    assert "spec.vllm.cache.storageClassName" in message
    assert "must be the name of a StorageClass" in message or "at most 253" in message


@pytest.mark.parametrize("name", ["gp3.encrypted", "standard", "0", ""])
def test_storage_class_names_kubernetes_accepts_are_accepted(name: str) -> None:
    accepted(vllm={**VLLM, "cache": {"size": "1Gi", "storageClassName": name}})


@pytest.mark.parametrize(
    ("vllm", "field"),
    [
        ({"nodeSelector": {"bad key": "x"}}, "spec.vllm.nodeSelector"),
        ({"nodeSelector": {"pool": " "}}, "spec.vllm.nodeSelector.pool"),
        ({"nodeSelector": {"pool": "x" * 64}}, "spec.vllm.nodeSelector.pool"),
        ({"nodeSelector": {"Example.com/pool": "a"}}, "spec.vllm.nodeSelector"),
        ({"podAnnotations": {"a b": "x"}}, "spec.vllm.podAnnotations"),
        ({"runtimeClassName": "Nvidia"}, "spec.vllm.runtimeClassName"),
        ({"image": " vllm/vllm-openai"}, "spec.vllm.image"),
        ({"image": "vllm/vllm-openai\u00a0"}, "spec.vllm.image"),
        ({"hfTokenSecretRef": {"name": "hf", "key": "a/b"}}, "spec.vllm.hfTokenSecretRef.key"),
        ({"hfTokenSecretRef": {"name": "hf", "key": "..x"}}, "spec.vllm.hfTokenSecretRef.key"),
        ({"hfTokenSecretRef": {"name": "hf", "key": "."}}, "spec.vllm.hfTokenSecretRef.key"),
        ({"maxModelLen": 2**31}, "spec.vllm.maxModelLen"),
        ({"tolerations": [{"key": "", "operator": "Equal"}]}, "spec.vllm.tolerations.0"),
        ({"tolerations": [{"key": "bad key"}]}, "spec.vllm.tolerations.0.key"),
        ({"tolerations": [{"key": "k", "value": "a b"}]}, "spec.vllm.tolerations.0.value"),
        (
            {"tolerations": [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 2**31}]},
            "spec.vllm.tolerations.0.tolerationSeconds",
        ),
    ],
)
def test_pod_fields_follow_kubernetes_grammars(vllm: dict[str, Any], field: str) -> None:
    message = refusal(vllm={**VLLM, **vllm})
    assert field in message, message


def test_what_kubernetes_accepts_reaches_the_pod_as_written() -> None:
    vllm = {
        **VLLM,
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100", "pool": ""},
        "podAnnotations": {"Example.com/Team": "ml \u00e9quipe"},  # keys are case-insensitive
        "runtimeClassName": "kata.v2",
        "image": "reg.io/vllm:1 with inner space",  # Kubernetes checks only the ends
        "hfTokenSecretRef": {"name": "hf", "key": ".hidden-token_1"},
        "tolerations": [{"operator": "Exists"}, {"key": "", "operator": "Exists"}],
    }
    pod = pod_spec(accepted(vllm=vllm))
    assert pod["nodeSelector"] == vllm["nodeSelector"]
    assert pod["runtimeClassName"] == "kata.v2"
    assert pod["containers"][0]["image"] == vllm["image"]
    assert pod["tolerations"][:2] == [{"operator": "Exists"}, {"key": "", "operator": "Exists"}]


# -- affinity --------------------------------------------------------------------------------

REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def node_terms(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchExpressions": list(expressions)}]}}
    }


def pod_term(**term: Any) -> dict[str, Any]:
    return {"podAntiAffinity": {REQUIRED: [{"topologyKey": "kubernetes.io/hostname", **term}]}}


@pytest.mark.parametrize(
    ("affinity", "where", "words"),
    [
        (
            node_terms({"key": "pool", "operator": "In"}),
            "matchExpressions.0",
            "values must not be empty with operator In or NotIn",
        ),
        (
            node_terms({"key": "pool", "operator": "NotIn", "values": []}),
            "matchExpressions.0",
            "values must not be empty",
        ),
        (
            node_terms({"key": "pool", "operator": "Exists", "values": ["a"]}),
            "matchExpressions.0",
            "values must be empty with operator Exists",
        ),
        (
            node_terms({"key": "mem", "operator": "Gt", "values": ["lots"]}),
            "matchExpressions.0",
            "exactly one value, an integer",
        ),
        (
            node_terms({"key": "mem", "operator": "Lt", "values": ["1", "2"]}),
            "matchExpressions.0",
            "exactly one value, an integer",
        ),
        (
            node_terms({"key": "pool", "operator": "Near", "values": ["a"]}),
            "matchExpressions.0.operator",
            "Input should be",
        ),
        (
            node_terms({"key": "bad key", "operator": "Exists"}),
            "matchExpressions.0.key",
            "should match pattern",
        ),
        (
            node_terms({"key": "pool", "operator": "In", "values": ["a b"]}),
            "matchExpressions.0.values.0",
            "should match pattern",
        ),
        (
            {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}},
            "nodeSelectorTerms",
            "at least 1 item",
        ),
        (
            {
                "nodeAffinity": {
                    REQUIRED: {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {"key": "metadata.labels", "operator": "In", "values": ["n"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "matchFields.0.key",
            "'metadata.name'",
        ),
        (
            {
                "nodeAffinity": {
                    REQUIRED: {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": ["a", "b"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "matchFields.0.values",
            "at most 1 item",
        ),
        (
            {"nodeAffinity": {PREFERRED: [{"weight": 0, "preference": {}}]}},
            "weight",
            "greater than or equal to 1",
        ),
        (
            {"nodeAffinity": {PREFERRED: [{"weight": 101, "preference": {}}]}},
            "weight",
            "less than or equal to 100",
        ),
        ({"nodeAffinity": {PREFERRED: [{"preference": {}}]}}, "weight", "Field required"),
        ({"podAntiAffinity": {REQUIRED: [{"labelSelector": {}}]}}, "topologyKey", "Field required"),
        (pod_term(topologyKey=""), "topologyKey", "at least 1 character"),
        (pod_term(namespaces=["Ops"]), "namespaces.0", "should match pattern"),
        (
            pod_term(labelSelector={"matchLabels": {"app": "a b"}}),
            "matchLabels.app",
            "should match pattern",
        ),
        (
            pod_term(
                labelSelector={
                    "matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]
                }
            ),
            "matchExpressions.0.operator",
            "Input should be",
        ),
        (pod_term(matchLabelKeys=["pod-template-hash"]), "podAntiAffinity", "need a labelSelector"),
        (
            pod_term(labelSelector={}, matchLabelKeys=["a"], mismatchLabelKeys=["a"]),
            "podAntiAffinity",
            "both matchLabelKeys and mismatchLabelKeys",
        ),
        (
            pod_term(labelSelector={"matchLabels": {"app": "x"}}, matchLabelKeys=["app"]),
            "podAntiAffinity",
            "may not also be in labelSelector",
        ),
        (
            {"nodeAffinity": {"requiredDuringSchedulingRequiredDuringExecution": {}}},
            "nodeAffinity.requiredDuringSchedulingRequiredDuringExecution",
            "Extra inputs",
        ),
        (
            {"podAffinity": {REQUIRED: [{"topologyKey": "zone", "bogus": 1}]}},
            "bogus",
            "Extra inputs",
        ),
    ],
)
def test_an_affinity_kubernetes_would_refuse_is_refused_naming_its_field(
    affinity: dict[str, Any], where: str, words: str
) -> None:
    message = refusal(vllm={**VLLM, "affinity": affinity})
    assert "spec.vllm.affinity." in message and where in message and words in message, message


@pytest.mark.parametrize(
    "affinity",
    [
        node_terms(
            {"key": "pool", "operator": "In", "values": ["gpu", "a100"]},
            {"key": "spot", "operator": "DoesNotExist"},
            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40000"]},
        ),
        {
            "nodeAffinity": {
                REQUIRED: {
                    "nodeSelectorTerms": [
                        {},
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "NotIn", "values": ["node-1"]}
                            ]
                        },
                    ]
                },
                PREFERRED: [
                    {
                        "weight": 1,
                        "preference": {
                            "matchExpressions": [
                                {"key": "zone", "operator": "NotIn", "values": ["a"]}
                            ]
                        },
                    }
                ],
            }
        },
        {
            "podAffinity": {
                PREFERRED: [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "topology.kubernetes.io/zone",
                            "namespaceSelector": {},
                            "labelSelector": {
                                "matchExpressions": [{"key": "app", "operator": "Exists"}]
                            },
                            "matchLabelKeys": ["pod-template-hash"],
                            "mismatchLabelKeys": ["app"],
                        },
                    }
                ]
            },
            "podAntiAffinity": {
                REQUIRED: [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "namespaces": ["ai"],
                        "labelSelector": {"matchLabels": {"a": "b"}},
                    }
                ]
            },
        },
    ],
)
def test_an_affinity_kubernetes_accepts_reaches_the_pod_as_written(
    affinity: dict[str, Any],
) -> None:
    spec = accepted(
        vllm={**VLLM, "affinity": affinity},
        router={"affinity": affinity},
        consumers=[{"name": "notes"}],
    )
    assert pod_spec(spec)["affinity"] == affinity
    assert pod_spec(spec, "router")["affinity"] == affinity


def test_affinity_leaves_out_what_the_api_server_drops() -> None:
    """Empty lists and an empty matchLabels are not stored (Go's omitempty), so they are not
    applied either: otherwise the live Deployment would never contain what was applied and
    every reconciliation would apply it again. An empty labelSelector stays: it selects
    every pod, where no labelSelector selects none."""
    affinity = {
        "podAffinity": {
            REQUIRED: [
                {"topologyKey": "zone", "namespaces": [], "labelSelector": {"matchLabels": {}}}
            ],
            PREFERRED: [],
        }
    }
    built = pod_spec(accepted(vllm={**VLLM, "affinity": affinity}))["affinity"]
    assert built == {"podAffinity": {REQUIRED: [{"topologyKey": "zone", "labelSelector": {}}]}}
