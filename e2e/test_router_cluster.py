"""The router against the cluster: it reads the routing table the operator writes, with the
least-privilege identity the operator gives it, and follows a weight change within 2 s.

The router runs as a local process (as it would in its pod, but on loopback), authenticated
with a token of the operator-created ServiceAccount. The engines are two real Ollama servers
on loopback serving the tiny model (the cluster's engine pods are simulated): one is the
Ollama engine, the other stands in vLLM's place, which it can because the router speaks only
the OpenAI API upstream and Ollama serves it too (real vLLM starts in a minute; this test is
about the table, not the engine). Where each request went is counted at the engines
themselves, in their access logs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from openai import OpenAI
from testsupport.markers import needs
from testsupport.programs import RouterProcess

from e2e.engines.ollama_server import OllamaServer
from e2e.harness import Kubectl, OperatorProcess, wait_for
from e2e.test_backend import EXAMPLE, apply_example, wait_phase

pytestmark = needs("cluster", "ollama")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[OllamaServer, OllamaServer]]:
    """Two real Ollama servers in the vLLM and the Ollama engine's places, both serving the
    example's model."""
    with (
        OllamaServer(model_names=["llama3.2"], log_path=tmp_path / "vllm-place.log") as vllm,
        OllamaServer(model_names=["llama3.2"], log_path=tmp_path / "ollama.log") as ollama,
    ):
        vllm.start()
        ollama.start()
        yield vllm, ollama


def token_kubeconfig(kubectl: Kubectl, namespace: str, path: Path) -> Path:
    """A kubeconfig holding a token of the routers' ServiceAccount (one per namespace), and
    nothing more."""
    token = kubectl.run(
        "create", "token", "inferops-router", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    admin = yaml.safe_load(kubectl.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "router",
        "clusters": [cluster],
        "users": [{"name": "router", "user": {"token": token}}],
        "contexts": [
            {
                "name": "router",
                "context": {"cluster": cluster["name"], "user": "router", "namespace": namespace},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_router_follows_the_operators_table(
    kubectl: Kubectl,
    operator: OperatorProcess,
    namespace: str,
    engines: tuple[OllamaServer, OllamaServer],
    tmp_path: Path,
) -> None:
    vllm, ollama = engines
    apply_example(kubectl, namespace)
    wait_phase(kubectl, namespace, "Ready")
    kubeconfig = token_kubeconfig(kubectl, namespace, tmp_path / "router.kubeconfig")

    def can_i(*args: str) -> str:
        result = kubectl.run(
            "auth", "can-i", *args, "-n", namespace, "--kubeconfig", str(kubeconfig), check=False
        )
        return result.stdout.strip()

    assert can_i("watch", "configmaps/llama32-router") == "yes"
    assert can_i("get", "configmaps/other") == "no"
    assert can_i("list", "secrets") == "no"
    assert can_i("update", "configmaps/llama32-router") == "no"

    router = RouterProcess(
        ["--configmap", f"{namespace}/llama32-router"],
        tmp_path / "router.log",
        env={**kubectl.env, "KUBECONFIG": str(kubeconfig)},
        engine_urls={"vllm": vllm.url, "ollama": ollama.url},
    )
    router.start()  # ready once it has loaded the table from the cluster
    try:
        client = OpenAI(
            base_url=f"{router.url}/v1",
            api_key="unused",
            default_headers={"Host": f"llama32-rag.{namespace}.svc"},
        )

        def send(count: int, expected: tuple[int, int]) -> None:
            """Requests from rag; `expected`: how many reach (vllm, ollama)."""
            before = vllm.served(), ollama.served()
            for _ in range(count):
                answer = client.chat.completions.create(
                    model="llama3.2", messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
                assert answer.choices[0].message.content is not None

            def reached() -> tuple[int, int]:
                return vllm.served() - before[0], ollama.served() - before[1]

            # An engine logs a request as its answer ends, a moment after the client has it.
            wait_for(f"{expected} requests at (vllm, ollama)", lambda: reached() == expected, 10)

        send(40, (0, 40))  # rag starts at weight 0: all on Ollama

        consumers = copy.deepcopy(EXAMPLE["spec"]["consumers"])
        consumers[1]["weight"] = 100
        started = time.monotonic()
        apply_example(kubectl, namespace, consumers=consumers)
        wait_for(
            "rag's new weight in the router",
            lambda: (
                router.metric("inferops_router_consumer_weight", consumer="rag", kind="configured")
                == 100
            ),
            10,
            interval=0.05,
        )
        # A figure, not a verdict: bench/operator measures how fast at scale.
        print(f"\nthe router saw the new weight {time.monotonic() - started:.2f}s after the apply")
        send(40, (40, 0))
    finally:
        router.stop()
