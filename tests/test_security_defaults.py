"""The defaults SECURITY.md promises, checked on what the builders make: vLLM never gets
`--trust-remote-code` unless `extraArgs` asks for it, the HF token is a `secretKeyRef`,
routers never trust the consumer override header, and router pods run like the operator's
(restricted Pod Security: non-root, read-only root filesystem, no privilege escalation, no
capabilities, seccomp RuntimeDefault), which the router really survives: it serves on a
filesystem that refuses every write outside its /tmp (testsupport/readonly.py; the operator gets
the same check in e2e/test_security.py, as it needs an API server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from testsupport import readonly
from testsupport.helm import Helm
from testsupport.programs import RouterProcess, one_consumer_table
from testsupport.standin import EngineStandin, InThread

from inferops.builders import desired_children
from inferops.router.__main__ import parse_args
from tests.conftest import OWNER, make_spec
from tests.test_chart import helm_binary

pytestmark = [pytest.mark.helm]

SPEC: dict[str, Any] = {
    "vllm": {
        "model": "meta-llama/Llama-3.2-3B-Instruct",
        "hfTokenSecretRef": {"name": "hf-token", "key": "token"},
    },
    "consumers": [{"name": "notes"}, {"name": "rag"}],
}


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name
    )
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def test_vllm_never_trusts_remote_code_unless_asked() -> None:
    children = desired_children(make_spec(**SPEC), OWNER)
    assert not any("trust-remote-code" in json.dumps(o) for o in children)
    asked = {**SPEC, "vllm": {**SPEC["vllm"], "extraArgs": ["--trust-remote-code"]}}
    args = _container(desired_children(make_spec(**asked), OWNER), "llama32-vllm")["args"]
    assert args.count("--trust-remote-code") == 1


def test_the_hf_token_is_a_reference() -> None:
    container = _container(desired_children(make_spec(**SPEC), OWNER), "llama32-vllm")
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    }
    assert "envFrom" not in container


def test_routers_never_trust_the_consumer_header() -> None:
    container = _container(desired_children(make_spec(**SPEC), OWNER), "llama32-router")
    argv = [*container["command"], *container["args"]]
    assert not any("trust-consumer-header" in arg for arg in argv)
    assert parse_args(container["args"]).trust_consumer_header is False
    assert parse_args(["--table-file", "t.json", "--trust-consumer-header"]).trust_consumer_header


# ---------------------------------------------------------------- non-root, read-only


def _router_pod() -> dict[str, Any]:
    deployment = next(
        o
        for o in desired_children(make_spec(**SPEC), OWNER)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "llama32-router"
    )
    return dict(deployment["spec"]["template"]["spec"])


def _effective(pod: dict[str, Any]) -> dict[str, Any]:
    """The container's security settings with the pod's filled in, as the kubelet applies
    them (the container's win)."""
    (container,) = pod["containers"]
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}


RESTRICTED = {
    "runAsNonRoot": True,
    "runAsUser": 65532,  # the image's user
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def test_router_pods_are_restricted_with_a_writable_tmp() -> None:
    pod = _router_pod()
    security = _effective(pod)
    assert RESTRICTED.items() <= security.items()
    assert not security.get("privileged") and not security.get("capabilities", {}).get("add")
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tmp"]] == {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
    assert set(mounts) == {"/tmp"}  # the only writable place


def test_router_and_operator_pods_run_alike(tmp_path: Path) -> None:
    """One image, two entrypoints: the same restrictions, and /tmp (HOME in the image) the
    one writable place in both (the operator's pod as the chart renders it)."""
    chart = Helm(helm_binary(), tmp_path).render()
    operator = next(o for o in chart if o["kind"] == "Deployment")
    operator_pod = operator["spec"]["template"]["spec"]
    router_pod = _router_pod()
    assert RESTRICTED.items() <= _effective(operator_pod).items()
    keys = (*RESTRICTED, "runAsGroup")
    assert {k: _effective(router_pod).get(k) for k in keys} == {
        k: _effective(operator_pod).get(k) for k in keys
    }
    for pod in (operator_pod, router_pod):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = pod["containers"][0]["volumeMounts"]
        assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in mounts] == [
            ("/tmp", True)
        ]
    assert readonly.image_env()["HOME"] == "/tmp"
    assert readonly.image_env()["PYTHONDONTWRITEBYTECODE"] == "1"  # no .pyc on a read-only root


def test_the_read_only_guard_refuses_writes_outside_tmp(tmp_path: Path) -> None:
    """The check below would prove nothing if the guard let writes through: a write it must
    refuse (py_compile writing bytecode next to its source), and one it must allow."""
    writable, elsewhere = tmp_path / "tmp", tmp_path / "root"
    writable.mkdir()
    elsewhere.mkdir()
    for where in (elsewhere, writable):
        (where / "m.py").write_text("X = 1\n")
    env = readonly.environment({"PATH": "/usr/bin:/bin"}, writable)

    def compile_in(where: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*readonly.command(writable, "py_compile"), str(where / "m.py")],
            capture_output=True,
            text=True,
            env=env,
            cwd=writable,
            timeout=60,
        )

    refused = compile_in(elsewhere)
    assert refused.returncode != 0
    assert f"{readonly.REFUSED} os.mkdir {elsewhere / '__pycache__'}" in refused.stderr
    assert "Read-only file system" in refused.stderr
    assert not (elsewhere / "__pycache__").exists()
    allowed = compile_in(writable)
    assert allowed.returncode == 0, allowed.stderr
    assert readonly.REFUSED not in allowed.stderr
    assert list((writable / "__pycache__").glob("m.*.pyc"))


def test_the_router_serves_on_a_read_only_root(tmp_path: Path) -> None:
    """The router process, with the image's environment, on a root that refuses writes
    outside its /tmp: it loads its table, proxies OpenAI and Ollama requests (streamed too),
    falls back, serves /metrics, stops cleanly, and never tries to write."""
    vllm = InThread(EngineStandin("vllm"))
    vllm.standin.behaviour.fail_status, vllm.standin.behaviour.fail_after = 500, 2
    ollama = InThread(EngineStandin("ollama"))
    vllm.start()
    ollama.start()
    table = one_consumer_table(tmp_path / "routes.json", vllm.url, ollama.url)
    writable = tmp_path / "tmp"
    writable.mkdir()
    log = tmp_path / "router.log"
    router = RouterProcess(
        [*table, "--access-log"],
        log,
        env={"PATH": "/usr/bin:/bin"},
        readonly=writable,
    )
    assert router.process.cmd[:3] == [sys.executable, "-m", "testsupport.readonly"]
    router.start()
    try:
        host = {"Host": "llama32-notes"}
        chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=router.url, timeout=10, trust_env=False) as http:
            answers = [
                http.post("/v1/chat/completions", json=chat, headers=host),
                http.post("/v1/chat/completions", json={**chat, "stream": True}, headers=host),
                http.post("/v1/chat/completions", json=chat, headers=host),  # falls back
                http.post("/api/chat", json={**chat, "stream": True}, headers=host),
            ]
            metrics = http.get("/metrics").text
    finally:
        router.stop()
        vllm.stop()
        ollama.stop()
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert "data: [DONE]" in answers[1].text
    assert "inferops_router_fallbacks_total{" in metrics
    text = log.read_text(errors="replace")
    assert "POST /api/chat" in text  # the access log (stdout) works
    assert readonly.REFUSED not in text, text
    assert router.process.returncode == 0, text
