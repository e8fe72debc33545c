"""The engines' NetworkPolicy: what the builder makes, when the operator builds it (its flags
and environment, as the chart sets them), and that turning it off leaves it out of the
desired children, which is what makes a reconciliation delete it.

Whether a network plugin enforces the policy is not tested anywhere (the test cluster has
none); e2e/test_network_policy.py checks that the API server accepts it and that the
operator creates and removes it."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
from testsupport.memkube import MemKube

from inferops.__main__ import parse_args
from inferops.api import API_VERSION, KIND
from inferops.api.status import InferenceBackendStatus
from inferops.builders import NetworkPolicyConfig, Owner, desired_children
from inferops.builders.common import SPEC_HASH_ANNOTATION
from inferops.builders.network_policy import Peer, engine_policy, parse_peers
from inferops.reconcile import Snapshot, decide, reconcile
from tests.conftest import OWNER, make_spec

MONITORING = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
ROUTERS = {
    "podSelector": {
        "matchLabels": {"inferops.io/backend": "llama32", "inferops.io/component": "router"}
    }
}
BOTH_PORTS = [{"port": 8000, "protocol": "TCP"}, {"port": 11434, "protocol": "TCP"}]
VLLM_PORT = [{"port": 8000, "protocol": "TCP"}]


def policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def test_the_engines_accept_only_their_routers_and_the_scrapers() -> None:
    policy = engine_policy(OWNER, NetworkPolicyConfig(parse_peers(json.dumps([MONITORING]))))
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["name"] == "llama32-engines"
    assert policy["metadata"]["namespace"] == "ai"
    assert policy["metadata"]["labels"]["inferops.io/backend"] == "llama32"
    assert policy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inferops-operator"
    assert policy["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert len(policy["metadata"]["annotations"][SPEC_HASH_ANNOTATION]) == 16
    assert policy["spec"] == {
        "podSelector": {
            "matchLabels": {"inferops.io/backend": "llama32"},
            "matchExpressions": [
                {
                    "key": "inferops.io/component",
                    "operator": "In",
                    "values": ["ollama", "vllm", "vllm-embeddings"],
                }
            ],
        },
        "policyTypes": ["Ingress"],  # egress stays open: the engines download models
        "ingress": [
            {"from": [ROUTERS], "ports": BOTH_PORTS},
            {"from": [MONITORING], "ports": VLLM_PORT},  # Ollama has no metrics
        ],
    }


def test_without_scrapers_only_the_routers_get_in() -> None:
    # Never a rule without `from`: that would admit every source.
    policy = engine_policy(OWNER, NetworkPolicyConfig())
    assert policy["spec"]["ingress"] == [{"from": [ROUTERS], "ports": BOTH_PORTS}]
    assert all(rule.get("from") for rule in policy["spec"]["ingress"])


def test_the_policy_selects_this_backends_engines_and_not_its_router() -> None:
    """The selectors against the labels the builders put on the pods."""
    objects = desired_children(
        make_spec(consumers=[{"name": "notes"}]), OWNER, network_policy=NetworkPolicyConfig()
    )
    pod_labels = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] == "Deployment"
    }
    (policy,) = policies(objects)

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        expressions = selector.get("matchExpressions", [])
        assert all(e["operator"] == "In" for e in expressions)
        return selector.get("matchLabels", {}).items() <= labels.items() and all(
            labels.get(e["key"]) in e["values"] for e in expressions
        )

    target = policy["spec"]["podSelector"]
    assert {n for n, labels in pod_labels.items() if selects(target, labels)} == {
        "llama32-vllm",
        "llama32-ollama",
    }
    source = policy["spec"]["ingress"][0]["from"][0]["podSelector"]
    assert {n for n, labels in pod_labels.items() if selects(source, labels)} == {"llama32-router"}
    other = desired_children(
        make_spec(consumers=[{"name": "notes"}]), Owner(name="other", namespace="ai", uid="u")
    )
    for deployment in (o for o in other if o["kind"] == "Deployment"):
        assert not selects(target, deployment["spec"]["template"]["metadata"]["labels"])


def test_built_only_when_configured_whatever_the_spec() -> None:
    for spec in (
        make_spec(),
        make_spec(consumers=[{"name": "notes"}]),
        make_spec(ollama={"model": "llama3.2:3b", "enabled": False}),
    ):
        assert policies(desired_children(spec, OWNER)) == []
        built = policies(desired_children(spec, OWNER, network_policy=NetworkPolicyConfig()))
        assert [p["metadata"]["name"] for p in built] == ["llama32-engines"]
    kinds = [
        o["kind"]
        for o in desired_children(make_spec(), OWNER, network_policy=NetworkPolicyConfig())
    ]
    assert kinds.index("NetworkPolicy") < kinds.index("Deployment")  # before the pods start


def test_turned_off_the_policy_is_no_longer_desired_so_it_is_deleted() -> None:
    """decide() with and without the configuration: the reconciliation applies the desired
    children and deletes every owned child of a registered kind that is not among them."""
    snap = Snapshot(OWNER, 1, make_spec(), None, InferenceBackendStatus(), {}, [])
    now = datetime(2026, 1, 1)
    on = decide(snap, None, now, network_policy=NetworkPolicyConfig())
    off = decide(snap, None, now)
    assert on.desired is not None and off.desired is not None
    assert [p["metadata"]["name"] for p in policies(on.desired)] == ["llama32-engines"]
    assert policies(off.desired) == []
    assert [o for o in on.desired if o["kind"] != "NetworkPolicy"] == off.desired


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[{}]", "a peer needs a namespaceSelector, a podSelector or both"),
        ('{"podSelector": {}}', "valid array"),
        ('[{"ipBlock": {"cidr": "10.0.0.0/8"}}]', "ipBlock: Extra inputs are not permitted"),
        ('[{"podSelector": {"matchLabels": {"a b": "x"}}}]', "should match pattern"),
        ('[{"podSelector": {"matchLabels": {"app": "-x"}}}]', "should match pattern"),
        (
            '[{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]',
            "operator In needs values",
        ),
        (
            '[{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists",'
            ' "values": ["x"]}]}}]',
            "operator Exists takes no values",
        ),
        ("monitoring", "Invalid JSON"),
    ],
)
def test_bad_peers_are_refused_naming_the_problem(text: str, words: str) -> None:
    with pytest.raises(ValueError, match="not a JSON list of NetworkPolicy peers") as error:
        parse_peers(text)
    assert words in str(error.value)


def test_peers_keep_what_kubernetes_needs() -> None:
    text = json.dumps(
        [
            MONITORING,
            {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
            {"namespaceSelector": {}},
        ]
    )
    assert [p.dump() for p in parse_peers(text)] == [
        MONITORING,
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
        {"namespaceSelector": {}},  # every namespace: allowed, the user asked for it
    ]
    assert parse_peers("") == parse_peers("  ") == ()


# ---------------------------------------------------------------- the operator's flags


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("INFEROPS_NETWORK_POLICY", "INFEROPS_NETWORK_POLICY_METRICS_FROM"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_off_by_default(clean_env: pytest.MonkeyPatch) -> None:
    assert parse_args([]).network_policy_config is None


def test_flags(clean_env: pytest.MonkeyPatch) -> None:
    assert parse_args(["--network-policy"]).network_policy_config == NetworkPolicyConfig()
    config = parse_args(
        ["--network-policy", "--network-policy-metrics-from", json.dumps([MONITORING])]
    ).network_policy_config
    assert config == NetworkPolicyConfig((Peer.model_validate(MONITORING),))


def test_the_environment_as_the_chart_sets_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INFEROPS_NETWORK_POLICY", "true")
    clean_env.setenv("INFEROPS_NETWORK_POLICY_METRICS_FROM", json.dumps([MONITORING]))
    config = parse_args([]).network_policy_config
    assert config is not None and [p.dump() for p in config.metrics_from] == [MONITORING]
    assert (
        parse_args(
            ["--no-network-policy", "--network-policy-metrics-from", ""]
        ).network_policy_config
        is None
    )
    clean_env.setenv("INFEROPS_NETWORK_POLICY", "false")
    clean_env.setenv("INFEROPS_NETWORK_POLICY_METRICS_FROM", "")
    assert parse_args([]).network_policy_config is None
    clean_env.setenv("INFEROPS_NETWORK_POLICY", "on")  # neither: not silently off
    with pytest.raises(SystemExit, match="INFEROPS_NETWORK_POLICY='on': expected true or false"):
        parse_args([])


def test_bad_configuration_stops_the_operator_at_start(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--network-policy", "--network-policy-metrics-from", "[{}]"])
    assert "a peer needs a namespaceSelector" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # scrapers named, policy off: a mistake, not a no-op
        parse_args(["--network-policy-metrics-from", json.dumps([MONITORING])])
    assert "needs --network-policy" in capsys.readouterr().err


# ---------------------------------------------------------------- someone else's policy


THEIRS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "llama32-engines", "namespace": "ai"},
    "spec": {"podSelector": {}},
}
"""Someone else's policy of the name the operator wants (e.g. made by hand from an earlier
SECURITY.md example), without owners."""


BODY = {
    "apiVersion": API_VERSION,
    "kind": KIND,
    "metadata": {"name": "llama32", "namespace": "ai", "uid": OWNER.uid, "generation": 1},
    "spec": {"model": "llama3.2", "vllm": {"model": "m"}},
}
ACCEPTED = {**BODY, "status": {"observedGeneration": 1, "phase": "Ready"}}


class NoChildren:
    """The watch cache before anything was created."""

    def objects(self, namespace: str, name: str) -> dict[tuple[str, str], Any]:
        return {}

    def wrote(self, namespace: str, name: str, replaced: Any, obj: Any) -> None: ...


async def test_an_existing_policy_of_that_name_is_reported_not_taken_over() -> None:
    message = "NetworkPolicy llama32-engines already exists and is not owned"
    log = logging.getLogger("test")

    def api() -> tuple[MemKube, dict[str, Any]]:
        kube = MemKube()
        kube.put(ACCEPTED)
        return kube, kube.put(THEIRS)

    kube, theirs = api()
    outcome = await reconcile(
        kube, ACCEPTED, NoChildren(), log, network_policy=NetworkPolicyConfig()
    )
    assert outcome.invalid is not None and message in outcome.invalid
    # Theirs untouched, and the children created before it undone.
    assert [o for o in kube.objects() if o["kind"] != KIND] == [theirs]
    assert len(kube.verbs("delete")) == len(kube.verbs("apply")) - 1  # all but the refused
    # Off: the name is not ours to want.
    kube, _ = api()
    assert (await reconcile(kube, ACCEPTED, NoChildren(), log)).invalid is None
