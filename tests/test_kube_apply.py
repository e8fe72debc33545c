"""Apply patches reach the API server as YAML: every string must survive that decoding."""

from __future__ import annotations

import json

import yaml
from aiohttp import web
from testsupport.aioserve import serve

from inferops.kube import Kube, apply_body

AWKWARD = "x\x85y\x9f\x7f \u2028 \x01 café 😀 \u00a0 tab\tnew\nline"


def test_apply_body_is_yaml_that_decodes_to_the_object() -> None:
    obj = {"metadata": {"annotations": {"note": AWKWARD}}, "args": [AWKWARD, "plain"]}
    body = apply_body(obj)
    assert yaml.safe_load(body.decode()) == obj
    assert json.loads(body) == obj
    assert "😀".encode() in body  # characters YAML accepts stay as they are


async def test_apply_sends_that_body() -> None:
    seen: list[tuple[str, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.content_type, await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_patch("/api/v1/namespaces/ns/configmaps/c", handler)
    served = await serve(app)
    kube = Kube(served.url, "test")
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns"},
        "data": {"k": AWKWARD},
    }
    try:
        await kube.apply(obj)
    finally:
        await kube.__aexit__()
        await served.close()
    assert seen == [("application/apply-patch+yaml", apply_body(obj))]
