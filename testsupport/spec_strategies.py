"""Hypothesis strategies for InferenceBackends: valid specs over the whole range the API
allows, and mutations of them (wrong types, out-of-range numbers, bad names and patterns,
unknown fields, null and missing fields, broken migration steps, consumers whose Services
clash). Used by `tests/test_spec_properties.py` (the model, validation and builders).

A generated backend is a `Backend`: the resource name, the spec as a JSON document (what a
user writes, camelCase), and the mutations applied, which a failure report prints.

How many examples a property test runs: `examples(quick)`, or `INFEROPS_FUZZ_EXAMPLES` for the
long run (`make fuzz`).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from inferops.api.grammar import quantity_value
from inferops.api.migration import MAX_DURATION, seconds
from inferops.api.spec import RESERVED_CONSUMER_NAMES
from inferops.api.vllm_args import refusals

Json = Any
Path = tuple[str | int, ...]

FUZZ_EXAMPLES_ENV = "INFEROPS_FUZZ_EXAMPLES"


def examples(quick: int, cap: int | None = None) -> int:
    """Examples per property test: `quick` in `make test`; under `make fuzz` the number in
    `INFEROPS_FUZZ_EXAMPLES`, at most `cap` (for the tests whose every example is costly)."""
    wanted = int(os.environ.get(FUZZ_EXAMPLES_ENV) or quick)
    return min(wanted, cap) if cap is not None else wanted


def fuzz_settings(*suppress: HealthCheck, **more: Any) -> settings:
    """The property tests' Hypothesis settings: the same examples every time in `make test`,
    new ones under `make fuzz`; no example database (no .hypothesis/ directory in the
    checkout; a failure prints its example); the health checks in `suppress` off; `more`
    (e.g. `max_examples=examples(200)`, `deadline=None`) on top."""
    return settings(
        derandomize=not os.environ.get(FUZZ_EXAMPLES_ENV),
        database=None,
        suppress_health_check=list(suppress),
        **more,
    )


@dataclass(frozen=True)
class Backend:
    """One generated InferenceBackend."""

    name: str
    spec: Json
    mutations: tuple[str, ...] = field(default=())

    def manifest(self, namespace: str) -> Json:
        return {
            "apiVersion": "inferops.io/v1alpha1",
            "kind": "InferenceBackend",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": self.spec,
        }

    def __str__(self) -> str:
        return (
            f"name={self.name} mutations={list(self.mutations)}\n"
            f"spec={json.dumps(self.spec, ensure_ascii=True, sort_keys=True)}"
        )


# -- valid values ----------------------------------------------------------------------------


LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
ALNUM = LOWER + LOWER.upper() + DIGITS


def word(first: str, middle: str, last: str, max_len: int) -> st.SearchStrategy[str]:
    """`first`, up to `max_len - 2` of `middle`, then `last` (or `first` alone): the shape of
    the Kubernetes name grammars, drawn much faster than `st.from_regex`."""
    return st.one_of(
        st.sampled_from(first),
        st.builds(
            lambda a, b, c: a + b + c,
            st.sampled_from(first),
            st.text(middle, max_size=max(max_len - 2, 0)),
            st.sampled_from(last),
        ),
    )


def dns_1035(max_len: int) -> st.SearchStrategy[str]:
    """RFC 1035 labels (Service and resource names): short ones mostly, some at the limit."""
    return st.one_of(
        st.sampled_from(["a", "notes", "rag", "llama32", "x1"]),
        word(LOWER, LOWER + DIGITS + "-", LOWER + DIGITS, 14),
        st.text(LOWER + DIGITS, min_size=max_len - 1, max_size=max_len - 1).map(lambda s: "z" + s),
    )


def dns_label(max_len: int) -> st.SearchStrategy[str]:
    return st.one_of(
        word(LOWER + DIGITS, LOWER + DIGITS + "-", LOWER + DIGITS, 12),
        st.text(LOWER + DIGITS, min_size=max_len, max_size=max_len),
    )


RESOURCE_NAMES = dns_1035(50)
CONSUMER_NAMES = st.one_of(
    st.sampled_from(["notes", "rag", "ner", "search", "a"]), dns_label(40)
).filter(lambda n: n not in RESERVED_CONSUMER_NAMES)
OBJECT_NAMES = st.one_of(
    word(LOWER + DIGITS, LOWER + DIGITS + "-.", LOWER + DIGITS, 20).filter(
        lambda s: ".." not in s and ".-" not in s and "-." not in s
    ),
    st.sampled_from(["hf-token", "a.b", "0"]),
)

_SEGMENT = word(ALNUM, ALNUM + "._-", ALNUM + "._-", 14)
MODEL_NAMES = st.one_of(
    st.sampled_from(["llama3.2", "llama3.2:3b", "library/qwen2.5:0.5b-instruct", "m"]),
    st.builds(
        lambda segments, tag: "/".join(segments) + (f":{tag}" if tag else ""),
        st.lists(_SEGMENT, min_size=1, max_size=3),
        st.one_of(st.none(), word(ALNUM + "_", ALNUM + "._-", ALNUM + "._-", 10)),
    ),
)
HF_MODELS = st.one_of(
    st.sampled_from(["meta-llama/Llama-3.2-3B-Instruct", "Qwen/Qwen2.5-0.5B", "gpt2"]),
    st.builds(lambda a, b: f"{a}/{b}" if b else a, _SEGMENT, st.one_of(st.none(), _SEGMENT)),
    # An absolute path: any character but whitespace. (Go's RE2, the API server's, reads \s
    # as ASCII whitespace, Rust's regex, the model's, as Unicode whitespace: BAD_STRINGS
    # brings no-break spaces to find out whether the two disagree.)
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30)
    .map(lambda s: "/" + "".join(s.split()))
    .filter(lambda s: len(s) > 1),
)
IMAGES = st.sampled_from(
    ["vllm/vllm-openai:v0.9.0", "ollama/ollama:0.12.6", "reg.io/a/b@sha256:" + "0" * 64]
)

QUANTITY_STRINGS = st.one_of(
    st.sampled_from(["500m", "1", "2", "16Gi", "512Mi", "1.5", "100M", "1e3", "+1", ".5", "0"]),
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.one_of(st.integers(0, 9999), st.decimals(0, 9999, places=2).map(str)),
        st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "m", "k", "M", "G"]),
    ),
)
QUANTITIES = st.one_of(st.integers(0, 10**6), QUANTITY_STRINGS)
# Sizes of volumes (cache claims, /dev/shm): more than zero.
SIZES = QUANTITIES.filter(lambda q: quantity_value(q) > 0)
RESOURCE_KEYS = st.sampled_from(["cpu", "memory", "ephemeral-storage"])
DURATIONS = st.one_of(
    st.sampled_from(["30s", "1m", "1h30m", "10s", "2m", "500ms", "1.5h"]),
    st.builds(
        lambda n, unit: f"{n}{unit}", st.integers(0, 5000), st.sampled_from(["ms", "s", "m", "h"])
    ).filter(lambda d: seconds(d) <= seconds(MAX_DURATION)),
)
INTERVALS = st.sampled_from(["10s", "15s", "30s", "1m", "5m", "1h", "10000ms", "0.5m"])
LABEL_KEYS = st.one_of(
    st.sampled_from(["kubernetes.io/arch", "nvidia.com/gpu.product", "pool", "team"]),
    word(LOWER + DIGITS, LOWER + DIGITS + "-.", LOWER + DIGITS, 10),
)
LABEL_VALUES = st.one_of(st.just(""), word(ALNUM, ALNUM + "-_.", ALNUM, 12))
# Vendor flags vLLM takes, none of them managed by the operator, each with its value; any text
# as a value; and flags vLLM 0.32 does not know (an image's newer vLLM may).
EXTRA_ARG_GROUPS = st.one_of(
    st.sampled_from(
        [
            ["--enable-prefix-caching"],
            ["--max-num-seqs=64"],
            ["--quantization", "awq"],
            ["--trust-remote-code"],
            ["--enforce-eager"],
            ["--kv-cache-dtype=fp8"],
        ]
    ),
    st.text(max_size=40).map(lambda value: ["--chat-template", value]),
    st.text(max_size=30).map(lambda name: [f"--x-{name}"]),
)
EXTRA_ARGS = (
    st.lists(EXTRA_ARG_GROUPS, max_size=4)
    .map(lambda groups: [item for group in groups for item in group])
    .filter(lambda items: not refusals(items))
)


@st.composite
def resources(draw: st.DrawFn) -> Json:
    """Requests and limits; a request above its limit (which Kubernetes refuses) is swapped
    with it."""
    amounts = st.dictionaries(RESOURCE_KEYS, QUANTITIES, max_size=3)
    out = draw(st.fixed_dictionaries({}, optional={"requests": amounts, "limits": amounts}))
    requests, limits = out.get("requests", {}), out.get("limits", {})
    for key in set(requests) & set(limits):
        if quantity_value(requests[key]) > quantity_value(limits[key]):
            requests[key], limits[key] = limits[key], requests[key]
    return out


TOLERATIONS = st.fixed_dictionaries(
    {},
    optional={
        "key": st.sampled_from(["nvidia.com/gpu", "dedicated", "node.kubernetes.io/unreachable"]),
        "operator": st.sampled_from(["Exists", "Equal"]),
        "value": st.sampled_from(["present", "gpu", ""]),
        "effect": st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
        "tolerationSeconds": st.integers(0, 3600),
    },
).filter(
    # Kubernetes' own rules for a pod's tolerations (the CRD checks them too).
    lambda t: (
        ("key" in t or t.get("operator") == "Exists")
        and not (t.get("operator") == "Exists" and "value" in t)
        and ("tolerationSeconds" not in t or t.get("effect") == "NoExecute")
    )
)
AFFINITY = st.sampled_from(
    [
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}
                    ]
                }
            }
        },
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"a": "b"}},
                        },
                    }
                ]
            }
        },
        {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "nvidia.com/gpu.memory",
                                    "operator": "Gt",
                                    "values": ["40000"],
                                },
                                {"key": "spot", "operator": "DoesNotExist"},
                            ]
                        },
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["gpu-node-1"]}
                            ]
                        },
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "preference": {
                            "matchExpressions": [
                                {"key": "zone", "operator": "NotIn", "values": ["a", "b"]}
                            ]
                        },
                    }
                ],
            }
        },
        {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "topology.kubernetes.io/zone",
                        "labelSelector": {
                            "matchExpressions": [
                                {"key": "app", "operator": "In", "values": ["rag"]}
                            ]
                        },
                        "namespaces": ["rag", "notes"],
                        "namespaceSelector": {},
                        "matchLabelKeys": ["pod-template-hash"],
                        "mismatchLabelKeys": ["tenant"],
                    }
                ]
            },
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"inferops.io/component": "vllm"}},
                    }
                ]
            },
        },
    ]
)


def workload(replicas: int) -> dict[str, st.SearchStrategy[Json]]:
    """The optional fields every engine shares (`WorkloadSpec`)."""
    return {
        "replicas": st.integers(0, replicas),
        "resources": resources(),
        "nodeSelector": st.dictionaries(LABEL_KEYS, LABEL_VALUES, max_size=2),
        "tolerations": st.lists(TOLERATIONS, max_size=2),
        "affinity": AFFINITY,
        "runtimeClassName": st.sampled_from(["nvidia", "runc", "kata.v2"]),
        "podAnnotations": st.dictionaries(
            st.sampled_from(["prometheus.io/scrape", "team", "example.com/owner"]),
            st.text(max_size=20),
            max_size=2,
        ),
    }


CACHES = st.one_of(
    st.fixed_dictionaries(
        {"size": SIZES},
        optional={
            "storageClassName": st.sampled_from(["standard", "fast-ssd", "gp3.encrypted", ""]),
            "accessMode": st.sampled_from(["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]),
        },
    ),
    st.fixed_dictionaries({"existingClaim": OBJECT_NAMES}),
)

VLLM = st.fixed_dictionaries(
    {"model": HF_MODELS},
    optional={
        **workload(4),
        "image": IMAGES,
        "tensorParallelSize": st.integers(1, 64),
        "gpuMemoryUtilization": st.floats(0, 1, exclude_min=True),
        "maxModelLen": st.integers(1, 1 << 20),
        "dtype": st.sampled_from(["auto", "half", "float16", "bfloat16", "float", "float32"]),
        "extraArgs": EXTRA_ARGS,
        "hfTokenSecretRef": st.fixed_dictionaries(
            {"name": OBJECT_NAMES}, optional={"key": st.sampled_from(["token", "HF_TOKEN", "a.b"])}
        ),
        "cache": CACHES,
        "shmSize": SIZES,
        "startupTimeoutSeconds": st.integers(60, 86400),
    },
)

OLLAMA = st.one_of(
    st.fixed_dictionaries({"enabled": st.just(False)}),
    st.fixed_dictionaries(
        {"model": MODEL_NAMES},
        optional={
            **workload(4),
            "enabled": st.just(True),
            "image": IMAGES,
            "gpus": st.integers(0, 64),
            "numParallel": st.integers(1, 256),
            "keepAlive": st.one_of(
                st.sampled_from(["24h", "-1", "5m", "0", "1h30m"]),
                st.builds(
                    lambda n, u: f"{n}{u}",
                    st.integers(0, 9999),
                    st.sampled_from(["", "ns", "us", "ms", "s", "m", "h"]),
                ),
            ),
            "contextLength": st.integers(1, 1 << 20),
            "cache": CACHES,
        },
    ),
)

ROUTER = st.fixed_dictionaries(
    {},
    optional={
        **workload(4),
        "image": IMAGES,
        "fallback": st.booleans(),
        "timeouts": st.fixed_dictionaries(
            {},
            optional={
                "connectSeconds": st.floats(0, 60, exclude_min=True),
                "firstByteSeconds": st.floats(0, 3600, exclude_min=True),
                "totalSeconds": st.floats(0, 86400, exclude_min=True),
            },
        ),
        "maxBodyBytes": st.integers(1024, 1 << 30),
    },
)


def gate(rate: bool) -> st.SearchStrategy[Json]:
    bound = st.floats(0, 1) if rate else st.floats(0, 1e6)
    with_ratio = st.fixed_dictionaries(
        {"maxRatio": st.floats(0, 100, exclude_min=True)}, optional={"max": bound, "floor": bound}
    )
    return st.one_of(st.none(), with_ratio, st.fixed_dictionaries({"max": bound}))


@st.composite
def migrations(draw: st.DrawFn) -> Json:
    weights = [*sorted(draw(st.sets(st.integers(1, 99), max_size=4))), 100]
    pauses: st.SearchStrategy[Json] = st.one_of(
        st.just({}), st.fixed_dictionaries({"duration": DURATIONS})
    )
    steps = [
        {"weight": w, **({"pause": draw(pauses)} if w != 100 and draw(st.booleans()) else {})}
        for w in weights
    ]
    return {
        "steps": steps,
        **draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "analysis": st.fixed_dictionaries(
                        {},
                        optional={
                            "interval": INTERVALS,
                            "initialDelay": DURATIONS,
                            "minRequests": st.integers(1, 1_000_000),
                            "errorRate": gate(rate=True),
                            "ttftP95": gate(rate=False),
                            "tpotP95": gate(rate=False),
                            "failureLimit": st.integers(0, 100),
                            "inconclusiveLimit": st.integers(1, 1000),
                            "onInconclusive": st.sampled_from(["Hold", "Rollback"]),
                        },
                    ),
                    "probe": st.fixed_dictionaries(
                        {},
                        optional={
                            "enabled": st.booleans(),
                            "requests": st.integers(1, 100),
                            "maxTokens": st.integers(1, 64),
                            "prompt": st.text(min_size=1, max_size=40),
                        },
                    ),
                    "maxParallel": st.integers(1, 64),
                    "paused": st.booleans(),
                    "afterMigration": st.sampled_from(["KeepOllama", "ScaleDownOllama"]),
                    "failoverHoldDown": DURATIONS,
                },
            )
        ),
    }


@st.composite
def consumers(draw: st.DrawFn, name: str) -> Json:
    """Consumers with unique names and Service names that clash with nothing."""
    names = draw(st.lists(CONSUMER_NAMES, unique=True, max_size=5))
    taken = {f"{name}-vllm", f"{name}-ollama"}
    taken |= {f"{name}-{n}" for n in names}
    out = []
    for n in names:
        consumer: Json = {"name": n}
        api = draw(st.sampled_from(["chat", "embeddings", None]))
        if api:
            consumer["api"] = api
        if draw(st.booleans()):
            consumer["weight"] = draw(
                st.sampled_from([0, 100]) if api == "embeddings" else st.integers(0, 100)
            )
        wants_service = len(name) + 1 + len(n) > 63 or draw(st.integers(0, 4)) == 0
        if wants_service:
            service = draw(dns_1035(63).filter(lambda s: s not in taken))
            taken.add(service)
            consumer["serviceName"] = service
        out.append(consumer)
    return out


@st.composite
def valid_backends(draw: st.DrawFn) -> Backend:
    name = draw(RESOURCE_NAMES)
    spec: Json = {"model": draw(MODEL_NAMES), "vllm": draw(VLLM)}
    if draw(st.integers(0, 3)):
        spec["ollama"] = draw(OLLAMA)
    if draw(st.integers(0, 3)):
        spec["consumers"] = draw(consumers(name))
    if draw(st.booleans()):
        spec["router"] = draw(ROUTER)
    if draw(st.booleans()):
        spec["migration"] = draw(migrations())
    return Backend(name, spec)


# -- mutations -------------------------------------------------------------------------------

WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["a", "name", "x"]), st.integers(0, 3), max_size=2),
)
EDGE_NUMBERS = st.sampled_from(
    [
        -1,
        0,
        -0.5,
        0.5,
        1.5,
        1.0,
        63,
        64,
        65,
        100,
        101,
        255,
        256,
        257,
        1000,
        1001,
        1023,
        86401,
        2**31,
        2**53 + 1,
        2**63,
        1e308,
        1e-9,
    ]
)
BAD_STRINGS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "a b",
            "UPPER",
            "-lead",
            "trail-",
            "1abc",
            "x" * 300,
            "ü",
            "a\nb",
            "a\u00a0b",
            "a\u2003b",
            "../x",
            "a:b:c",
            "a//b",
            "a_b",
            "--model=x",
            "NaN",
            "1e99h",
        ]
    ),
    st.text(max_size=20),
)
UNKNOWN_KEYS = st.sampled_from(["bogus", "tensorParalelSize", "Model", "replica", "x-extra"])


# Drawn uniformly: a kind listed twice is drawn twice as often.
MUTATIONS = (
    "type",
    "type",
    "number",
    "number",
    "string",
    "string",
    "unknown",
    "delete",
    "null",
    "list",
    "migration",
    "clash",
    "clash",
)


def _paths(doc: Json, at: Path = ()) -> list[Path]:
    """Every node of `doc` below the root, containers included."""
    out: list[Path] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*at, key))
            out += _paths(value, (*at, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.append((*at, i))
            out += _paths(value, (*at, i))
    return out


def _dicts(doc: Json, at: Path = ()) -> list[Path]:
    out: list[Path] = [at] if isinstance(doc, dict) else []
    children = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    )
    for key, value in children:
        out += _dicts(value, (*at, key))
    return out


def _get(doc: Json, path: Path) -> Json:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Json, path: Path, value: Json) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _same_kind(a: Json, b: Json) -> bool:
    def number(v: Json) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return type(a) is type(b) or (number(a) and number(b))


@st.composite
def _mutate_once(draw: st.DrawFn, backend: Backend) -> Backend:
    doc = copy.deepcopy(backend.spec)
    name = backend.name
    how = draw(st.sampled_from(MUTATIONS))
    paths = _paths(doc)
    if not paths:  # an earlier mutation left nothing to mutate (e.g. the spec is a scalar)
        return backend
    path = draw(st.sampled_from(paths))
    old = _get(doc, path)
    label = "/".join(str(p) for p in path)
    if how == "type":
        new = draw(WRONG_VALUES.filter(lambda v: not _same_kind(v, old)))
        _set(doc, path, new)
        return Backend(name, doc, (*backend.mutations, f"{label}: type -> {new!r}"))
    if how == "number" and isinstance(old, int | float) and not isinstance(old, bool):
        new = draw(st.one_of(EDGE_NUMBERS, st.integers(-(2**40), 2**40)))
        _set(doc, path, new)
        return Backend(name, doc, (*backend.mutations, f"{label}: {old!r} -> {new!r}"))
    if how in ("string", "number") and isinstance(old, str):
        new = draw(st.one_of(BAD_STRINGS, st.just(old + " "), st.just(old.upper())))
        _set(doc, path, new)
        return Backend(name, doc, (*backend.mutations, f"{label}: {old!r} -> {new!r}"))
    if how == "unknown" and _dicts(doc):
        where = draw(st.sampled_from(_dicts(doc)))
        key = draw(UNKNOWN_KEYS)
        _get(doc, where)[key] = draw(WRONG_VALUES)
        return Backend(name, doc, (*backend.mutations, f"{'/'.join(map(str, where))}: +{key}"))
    if how == "delete" and isinstance(path[-1], str):
        del _get(doc, path[:-1])[path[-1]]
        return Backend(name, doc, (*backend.mutations, f"{label}: deleted"))
    if how == "null":
        _set(doc, path, None)
        return Backend(name, doc, (*backend.mutations, f"{label}: null"))
    if how == "list":
        lists = [p for p in paths if isinstance(_get(doc, p), list) and _get(doc, p)]
        if lists:
            where = draw(st.sampled_from(lists))
            items = _get(doc, where)
            change = draw(st.sampled_from(["duplicate", "empty", "explode", "reverse"]))
            if change == "duplicate":
                items.append(copy.deepcopy(draw(st.sampled_from(items))))
            elif change == "empty":
                items.clear()
            elif change == "explode":
                items.extend(copy.deepcopy(items[-1]) for _ in range(70))
            else:
                items.reverse()
            return Backend(
                name, doc, (*backend.mutations, f"{'/'.join(map(str, where))}: {change}")
            )
    if how == "migration":
        migration = doc.setdefault("migration", {"steps": [{"weight": 100}]})
        if isinstance(migration, dict) and isinstance(migration.get("steps"), list):
            steps = migration["steps"]
            change = draw(
                st.sampled_from(
                    ["last-not-100", "pause-last", "repeat", "unsorted", "no-steps", "interval"]
                )
            )
            if change == "last-not-100" and steps:
                steps[-1] = {"weight": draw(st.integers(1, 99))}
            elif change == "pause-last" and steps and isinstance(steps[-1], dict):
                steps[-1] = {**steps[-1], "pause": {}}
            elif change == "repeat" and steps:
                steps.insert(0, copy.deepcopy(steps[-1]))
            elif change == "unsorted":
                steps[:] = [{"weight": 60}, {"weight": 30}, {"weight": 100}]
            elif change == "no-steps":
                steps.clear()
            else:
                migration.setdefault("analysis", {})
                if isinstance(migration["analysis"], dict):
                    migration["analysis"]["interval"] = draw(
                        st.sampled_from(["9s", "9999ms", "0s", "1ms", "99999999999h"])
                    )
            return Backend(name, doc, (*backend.mutations, f"migration: {change}"))
    if how == "clash":
        listed = doc.setdefault("consumers", [])
        if isinstance(listed, list):
            if not listed or not all(isinstance(c, dict) for c in listed):
                listed[:] = [{"name": "notes"}]
            i = draw(st.integers(0, len(listed) - 1))
            others = [c.get("name") for j, c in enumerate(listed) if j != i]
            service = draw(
                st.sampled_from(
                    [f"{name}-vllm", f"{name}-ollama", f"{name}-router"]
                    + [f"{name}-{o}" for o in others if isinstance(o, str)]
                    + [c["serviceName"] for c in listed if isinstance(c.get("serviceName"), str)]
                )
            )
            change = draw(
                st.sampled_from(
                    [
                        "serviceName",
                        "serviceName",
                        "serviceName",
                        "reserved",
                        "same-name",
                        "embeddings",
                    ]
                )
            )
            if change == "serviceName":
                listed[i]["serviceName"] = service
            elif change == "reserved":
                listed[i]["name"] = draw(st.sampled_from(RESERVED_CONSUMER_NAMES))
            elif change == "same-name":
                listed.append({**listed[i]})
            else:
                listed[i].update(api="embeddings", weight=draw(st.integers(1, 99)))
            return Backend(name, doc, (*backend.mutations, f"consumers[{i}]: {change} {service}"))
    # The drawn mutation does not apply to the drawn node: a wrong type always does.
    new = draw(WRONG_VALUES.filter(lambda v: not _same_kind(v, old)))
    _set(doc, path, new)
    return Backend(name, doc, (*backend.mutations, f"{label}: type -> {new!r}"))


@st.composite
def mutated_backends(draw: st.DrawFn) -> Backend:
    backend = draw(valid_backends())
    for _ in range(draw(st.integers(1, 3))):
        backend = draw(_mutate_once(backend))
    if draw(st.integers(0, 5)) == 0:
        # A valid name of any length, so the API server's name-length rules are exercised.
        backend = Backend(draw(dns_1035(50)), backend.spec, (*backend.mutations, "renamed"))
    return backend


def whole_resource_problems(backend: Backend) -> list[str]:
    """The CRD's rules on the whole resource, which the spec model cannot check (it does not
    see `metadata.name`); mirrored here so that a test can tell what the API server must
    refuse."""
    consumers = backend.spec.get("consumers") if isinstance(backend.spec, dict) else None
    if not isinstance(consumers, list):
        return []
    return [
        f"consumer {c['name']}: Service name {backend.name}-{c['name']} is over 63 characters"
        for c in consumers
        # A null serviceName is no serviceName: the API server drops nulls before its rules.
        if isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and c.get("serviceName") is None
        and len(backend.name) + 1 + len(c["name"]) > 63
    ]


def backends() -> st.SearchStrategy[Backend]:
    """One in three valid, the rest mutated."""
    return st.one_of(valid_backends(), mutated_backends(), mutated_backends())


__all__ = [
    "FUZZ_EXAMPLES_ENV",
    "Backend",
    "backends",
    "examples",
    "mutated_backends",
    "valid_backends",
    "whole_resource_problems",
]
