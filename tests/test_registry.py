"""One registry of the kinds the operator touches: the builders, the client and the chart's
RBAC rules all agree with it."""

from __future__ import annotations

from inferops import registry
from inferops.builders import CHILD_KINDS, NetworkPolicyConfig, desired_children
from inferops.kube import path
from tests.conftest import OWNER, make_spec


def test_the_charts_rules_file_is_generated_from_the_registry() -> None:
    assert registry.main(["--check"]) == 0, "run `python -m inferops.registry`"


def test_every_built_object_is_of_a_registered_child_kind() -> None:
    spec = make_spec(consumers=[{"name": "notes"}], vllm={"model": "m", "cache": {"size": "1Gi"}})
    children = desired_children(spec, OWNER, network_policy=NetworkPolicyConfig())
    built = {(o["apiVersion"], o["kind"]) for o in children}
    assert built == set(CHILD_KINDS)  # this spec builds every kind, and nothing else


def test_rules_grant_what_each_role_needs_and_nothing_more() -> None:
    granted = {
        (group, resource, verb)
        for rule in registry.rbac_rules()
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for kind in registry.KINDS:
        if kind.role not in ("child", "shared"):
            continue
        for verb in ("create", "patch", "delete", "get", "list", "watch"):
            assert (kind.group, kind.plural, verb) in granted
    assert ("", "pods", "delete") not in granted  # pods are only observed
    assert ("", "secrets", "get") not in granted  # the HF token is passed by reference
    assert ("inferops.io", "inferencebackends/status", "patch") in granted
    assert not any(verb in ("*", "update", "escalate", "bind") for _, _, verb in granted)


def test_the_client_knows_every_registered_kind() -> None:
    for kind in registry.KINDS:
        assert path(kind.api_version, kind.kind, "ns").endswith(f"/namespaces/ns/{kind.plural}")
