"""The engines' NetworkPolicy against a real API server: the policies the builder makes are
accepted (server-side dry run, strict field validation); an operator started with
`--network-policy` creates one per InferenceBackend, exactly as built, restores it when
someone loosens it, and an operator started without the flag deletes it again, leaving
everything else alone.

What none of this tests: that traffic is actually blocked. The local cluster has no network
plugin (kwok simulates the pods), and a plain API server stores NetworkPolicies without
enforcing them; enforcement is the network plugin's (Calico, Cilium, ...) job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from testsupport.markers import needs

from e2e.harness import Kubectl, OperatorProcess, free_port, wait_for
from e2e.test_backend import NAME, apply_example, backend, wait_phase
from inferops.builders import NetworkPolicyConfig, Owner
from inferops.builders.network_policy import engine_policy, parse_peers
from inferops.drift import contains

pytestmark = needs("cluster")

MONITORING = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
POLICY = f"{NAME}-engines"


def dry_run(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    warnings = kubectl.dry_run(obj)
    assert "Warning" not in warnings, warnings


def test_the_built_policies_are_accepted(kubectl: Kubectl, crd: str, namespace: str) -> None:
    owner = Owner(name=NAME, namespace=namespace, uid="00000000-0000-0000-0000-000000000000")
    peers = [
        [],
        [MONITORING],
        [
            {"namespaceSelector": {}},
            {
                "podSelector": {
                    "matchExpressions": [
                        {"key": "app", "operator": "In", "values": ["prometheus", "vmagent"]},
                        {"key": "tier", "operator": "DoesNotExist"},
                    ]
                }
            },
        ],
    ]
    for scrapers in peers:
        policy = engine_policy(owner, NetworkPolicyConfig(parse_peers(json.dumps(scrapers))))
        # Owner references are checked against live owners only when created for real.
        dry_run(kubectl, policy)


def test_the_operator_creates_the_policy_when_configured_and_deletes_it_when_not(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    scrapers = json.dumps([MONITORING])
    operator.stop()  # two operators must not drive the same resources
    flags = ("--network-policy", "--network-policy-metrics-from", scrapers)
    configured = OperatorProcess(kubectl, tmp_path / "operator.log", free_port(), extra_args=flags)
    plain = OperatorProcess(kubectl, tmp_path / "operator-plain.log", free_port())
    try:
        configured.start()
        apply_example(kubectl, namespace)
        ready = wait_phase(kubectl, namespace, "Ready")
        uid = ready["metadata"]["uid"]
        policy = kubectl.get("networkpolicy", POLICY, namespace)
        assert policy is not None, kubectl.run("get", "networkpolicies", "-n", namespace).stdout
        built = engine_policy(
            Owner(NAME, namespace, uid), NetworkPolicyConfig(parse_peers(scrapers))
        )
        assert contains(policy, built), policy  # stored as built
        assert policy["spec"] == built["spec"]  # and nothing defaulted into it
        assert policy["metadata"]["ownerReferences"][0]["uid"] == uid

        # Loosened by hand (an ingress rule without `from` admits everybody): put back.
        kubectl.run(
            "patch",
            "networkpolicy",
            POLICY,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"ingress": [{}]}}),
        )

        def restored() -> bool:
            found = kubectl.get("networkpolicy", POLICY, namespace)
            return found is not None and found["spec"]["ingress"] == built["spec"]["ingress"]

        wait_for("the loosened NetworkPolicy to be restored", restored, 30)

        # Turned off: the operator that starts without the flag deletes it, and only it.
        configured.stop()
        others = {
            (o["kind"], o["metadata"]["name"], o["metadata"]["uid"])
            for kind in ("deployments", "services", "configmaps")
            for o in kubectl.items(kind, namespace)
        }
        plain.start()
        wait_for(
            "the NetworkPolicy to be deleted",
            lambda: kubectl.get("networkpolicy", POLICY, namespace) is None,
            30,
        )
        assert kubectl.items("networkpolicies", namespace) == []
        assert {
            (o["kind"], o["metadata"]["name"], o["metadata"]["uid"])
            for kind in ("deployments", "services", "configmaps")
            for o in kubectl.items(kind, namespace)
        } == others
        assert backend(kubectl, namespace)["status"]["phase"] == "Ready"
        for process in (configured, plain):
            # A missing permission shows as "forbidden"; an Event refused in another test's
            # namespace that is being deleted (the operator watches every namespace) is not one.
            lines = process.log_tail(400).splitlines()
            refused = [
                line
                for line in lines
                if "forbidden" in line.lower() and "being terminated" not in line
            ]
            assert refused == [], process.log_tail()
    finally:
        configured.stop()
        plain.stop()
        operator.start()
