"""Apply patches reach the API server as YAML: every string must survive that decoding."""

from __future__ import annotations

import json

import httpx
import yaml

from inferops.kube import Kube, apply_body

AWKWARD = "x\x85y\x9f\x7f \u2028 \x01 café 😀 \u00a0 tab\tnew\nline"


def test_apply_body_is_yaml_that_decodes_to_the_object() -> None:
    obj = {"metadata": {"annotations": {"note": AWKWARD}}, "args": [AWKWARD, "plain"]}
    body = apply_body(obj)
    assert yaml.safe_load(body.decode()) == obj
    assert json.loads(body) == obj
    assert "😀".encode() in body  # characters YAML accepts stay as they are


async def test_apply_sends_that_body() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={})

    kube = Kube(httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                  base_url="http://api"), "test")  # fmt: skip
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "c", "namespace": "ns"}, "data": {"k": AWKWARD}}  # fmt: skip
    await kube.apply(obj)
    await kube.http.aclose()
    assert seen == [apply_body(obj)]
