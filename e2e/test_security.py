"""Secrets never leak (SECURITY.md).

1. The Hugging Face token: a Secret holding a fresh random value, an InferenceBackend that
   references it, reconciled by the session's operator. The value (and its base64 form, as
   a Secret stores it) appears nowhere but in the Secret: not in the resource (status,
   annotations), not in any other object of the namespace (the vLLM Deployment refers to it
   with `secretKeyRef`, never inlined), not in the namespace's Events, not in the operator's
   log, not in the operator's metrics.
2. A consumer's credentials: requests with `Authorization: Bearer <random>` through a router
   process (access log on, debug logging), some answered by the engines, some refused by the
   router, some falling back after an engine failure. The value never appears in the
   router's log or metrics.

And the pods run restricted (SECURITY.md, "The operator's permissions"):

3. The operator works on a read-only root filesystem: run under testsupport/readonly.py's guard
   (every write outside its /tmp refused and reported) with the image's environment, it
   reconciles the example to Ready and serves its metrics without trying to write anything.
   (The router's check needs no API server: tests/test_security_defaults.py.)
4. The router Deployment the operator builds passes the restricted Pod Security Standard
   (the chart's operator Deployment: e2e/test_chart.py).
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import urllib.request
from pathlib import Path

import httpx
from testsupport import readonly
from testsupport.markers import needs
from testsupport.programs import RouterProcess, one_consumer_table
from testsupport.standin import EngineStandin, InThread

from e2e.engines.ollama_server import OllamaServer
from e2e.harness import Kubectl, OperatorProcess, free_port
from e2e.test_backend import EXAMPLE, apply_example, wait_phase
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner, desired_children
from inferops.builders.router import name as router_name
from inferops.router.proxy import CONSUMER_HEADER

pytestmark = needs("cluster", "ollama")

# Every kind a namespace of this operator holds, the Secret itself aside.
KINDS = (
    "inferencebackends,deployments,replicasets,pods,services,endpointslices,configmaps,"
    "serviceaccounts,roles,rolebindings,persistentvolumeclaims"
)


def _forms(value: str) -> list[str]:
    """The value and its base64 form (how Secrets and some logs carry it)."""
    return [value, base64.b64encode(value.encode()).decode()]


def _leaks(text: str, value: str) -> list[str]:
    """Each occurrence of the value in `text`, with a little context."""
    found = []
    for form in _forms(value):
        at = text.find(form)
        while at != -1:
            found.append(text[max(at - 120, 0) : at + len(form) + 40])
            at = text.find(form, at + 1)
    return found


def test_the_hf_token_is_referenced_never_copied(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str
) -> None:
    token = f"hf_{secrets.token_urlsafe(24)}"
    kubectl.run(
        "create", "secret", "generic", "hf-token", "-n", namespace, f"--from-literal=token={token}"
    )
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    # One more generation, so that the operator logs and reports a change too.
    consumers = copy.deepcopy(EXAMPLE["spec"]["consumers"])
    consumers[1]["weight"] = 50
    apply_example(kubectl, namespace, consumers=consumers)
    wait_phase(kubectl, namespace, "Ready")

    deployment = kubectl.get("deployment", "llama32-vllm", namespace)
    assert deployment is not None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    assert "envFrom" not in container  # the Secret is not mounted wholesale either

    def run(*args: str) -> str:
        return kubectl.run(*args, "-n", namespace).stdout

    places = {
        "the namespace's objects": run("get", KINDS, "-o", "yaml"),
        "the namespace's Events": run("get", "events", "-o", "yaml"),
        "kubectl describe": run("describe", "inferencebackend", "llama32"),
        "the operator's log": operator.log.read_text(errors="replace"),
    }
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        places["the operator's metrics"] = response.read().decode()
    assert "hfTokenSecretRef" in places["the namespace's objects"]  # the reference is there
    leaks = {where: _leaks(text, token) for where, text in places.items()}
    assert not any(leaks.values()), f"the token leaked: {leaks}"
    # The Secret itself holds it, so the search above would have found a copy.
    secret = kubectl.get("secret", "hf-token", namespace)
    assert secret is not None and _leaks(json.dumps(secret), token)


def test_a_consumers_credentials_stay_out_of_the_routers_log_and_metrics(
    tmp_path: Path,
) -> None:
    credential = f"sk-{secrets.token_urlsafe(24)}"
    # In vLLM's place a fault injector that answers twice, then fails; Ollama is the real one.
    vllm = InThread(EngineStandin("vllm"))
    vllm.standin.behaviour.fail_status, vllm.standin.behaviour.fail_after = 500, 2
    ollama = OllamaServer(model_names=["llama3.2"], log_path=tmp_path / "ollama.log")
    vllm.start()
    ollama.start()
    table = one_consumer_table(tmp_path / "routes.json", vllm.url, ollama.url)
    log = tmp_path / "router.log"
    router = RouterProcess(
        [*table, "--access-log", "--log-level", "DEBUG"],
        log,
    )
    router.start()
    try:
        auth = {"Host": "llama32-notes", "Authorization": f"Bearer {credential}"}
        chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        sent = [
            ("/v1/chat/completions", chat, {}),  # vLLM answers
            ("/v1/chat/completions", {**chat, "stream": True}, {}),
            ("/v1/chat/completions", chat, {}),  # vLLM fails from now on: Ollama answers
            ("/api/chat", {**chat, "stream": False}, {}),
            ("/v1/chat/completions", {**chat, "model": "other"}, {}),  # refused: model
            ("/v1/chat/completions", chat, {"Host": "nobody"}),  # refused: consumer
            ("/v1/chat/completions", chat, {CONSUMER_HEADER: "notes"}),  # refused: header
            ("/v1/embeddings", {"model": "llama3.2", "input": "x"}, {}),
        ]
        statuses = []
        with httpx.Client(base_url=router.url, timeout=10, trust_env=False) as http:
            for path, body, headers in sent:
                statuses.append(http.post(path, json=body, headers={**auth, **headers}).status_code)
            metrics = http.get("/metrics").text
    finally:
        router.stop()
        vllm.stop()
        ollama.close()
    assert statuses == [200, 200, 200, 200, 404, 404, 400, 200], statuses
    assert "inferops_router_fallbacks_total" in metrics
    text = log.read_text(errors="replace")
    assert "POST /v1/chat/completions" in text  # the access log is on
    leaks = {"log": _leaks(text, credential), "metrics": _leaks(metrics, credential)}
    assert not any(leaks.values()), f"the credential leaked: {leaks}"


def test_the_operator_works_on_a_read_only_root(
    kubectl: Kubectl, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    writable = tmp_path / "tmp"  # the pod's emptyDir at /tmp
    writable.mkdir()
    log = tmp_path / "operator.log"
    operator.stop()  # two operators must not drive the same resources
    guarded = OperatorProcess(kubectl, log, free_port(), readonly=writable)
    try:
        guarded.start()
        apply_example(kubectl, namespace)
        wait_phase(kubectl, namespace, "Ready")
        consumers = copy.deepcopy(EXAMPLE["spec"]["consumers"])
        consumers[1]["weight"] = 50
        apply_example(kubectl, namespace, consumers=consumers)  # and a change after it
        wait_phase(kubectl, namespace, "Ready")
        assert guarded.reconciles(namespace) >= 2
    finally:
        guarded.stop()
        operator.start()
    text = log.read_text(errors="replace")
    assert "testsupport.readonly" in text  # it really ran under the guard
    assert readonly.REFUSED not in text, text


def test_the_router_deployment_passes_the_restricted_pod_security_standard(
    kubectl: Kubectl, crd: str, namespace: str
) -> None:
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/warn=restricted")
    owner = Owner(name="llama32", namespace=namespace, uid="00000000-0000-0000-0000-000000000000")
    spec = InferenceBackendSpec.model_validate(EXAMPLE["spec"])
    deployments = {
        o["metadata"]["name"]: o for o in desired_children(spec, owner) if o["kind"] == "Deployment"
    }

    # The namespace's warn level makes the API server name every violation of the template.
    warnings = kubectl.dry_run(deployments[router_name(owner)])
    assert "Warning" not in warnings, warnings
    # ... and it does warn: the vLLM Deployment (its image runs as root) would be refused.
    warnings = kubectl.dry_run(deployments["llama32-vllm"])
    assert "would violate PodSecurity" in warnings, warnings
