"""The defaults SECURITY.md promises, checked on what the builders make: vLLM never gets
`--trust-remote-code` unless `extraArgs` asks for it, the HF token is a `secretKeyRef`, and
routers never trust the consumer override header."""

from __future__ import annotations

import json
from typing import Any

from inferops.builders import desired_children
from inferops.router.__main__ import parse_args
from tests.conftest import OWNER, make_spec

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
