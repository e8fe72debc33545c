"""The engine stand-in's faults (testsupport/standin.py): one set for the stand-in and for
the proxy in front of a real server, which forwards everything else unchanged."""

from __future__ import annotations

import httpx
import pytest
from testsupport.standin import EngineStandin, FaultProxy, Faults, InThread

CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("faults", "served", "path", "status"),
    [
        (Faults(), 0, "/v1/chat/completions", None),
        (Faults(fail_status=500), 0, "/v1/chat/completions", 500),
        (Faults(fail_status=503, fail_after=2), 1, "/v1/chat/completions", None),
        (Faults(fail_status=503, fail_after=2), 2, "/v1/chat/completions", 503),
        (Faults(fail_status=500, fail_share=0.0), 5, "/v1/chat/completions", None),
        (Faults(fail_paths={"/v1/embeddings": 404}), 0, "/v1/embeddings", 404),
        (Faults(fail_paths={"/v1/embeddings": 404}), 0, "/v1/chat/completions", None),
    ],
)
def test_which_requests_fail(faults: Faults, served: int, path: str, status: int | None) -> None:
    assert faults.failing(path, served) == status


def test_clear_ends_every_fault_and_keeps_the_answers() -> None:
    standin = EngineStandin("vllm")
    b = standin.behaviour
    b.fail_status, b.fail_paths["/v1/embeddings"], b.delay, b.canned = 500, 404, 1.0, (200, {})
    b.words = ["x"]
    b.clear()
    assert (b.fail_status, b.fail_paths, b.delay, b.canned) == (None, {}, 0.0, None)
    assert b.words == ["x"]
    assert Faults().fail_paths is not Faults().fail_paths  # no dict shared between sets


def test_the_proxy_forwards_and_injects_the_same_faults() -> None:
    with InThread(EngineStandin("vllm")) as engine, InThread(FaultProxy(engine.url)) as proxy:
        faults = proxy.standin.faults
        with httpx.Client(base_url=proxy.url, trust_env=False, timeout=10) as http:
            streamed = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
            faults.fail_paths = {"/v1/completions": 500}
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
            prompt = {"model": "llama3.2", "prompt": "x"}
            assert http.post("/v1/completions", json=prompt).status_code == 500
            faults.clear()
            faults.canned = (503, {"error": "down"})
            canned = http.get("/v1/models")
            assert (canned.status_code, canned.json()) == (503, {"error": "down"})
            faults.clear()
            assert http.get("/v1/models").json()["data"][0]["id"] == "llama3.2"
    assert proxy.standin.injected == 2
    assert [s.path for s in engine.standin.seen] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/models",
    ]
