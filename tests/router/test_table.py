"""The routing table contract and its compilation into routes: pure, no network."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pydantic import ValidationError

from inferops.api.routing import RoutingTable, normalize_host
from inferops.router.routes import OLLAMA, VLLM, compile_table

CONTRACT = """
{
  "model": "llama3.2",
  "aliases": [],
  "engines": {
    "vllm":   {"url": "http://llama32-vllm.ns.svc:8000",    "ready": true},
    "ollama": {"url": "http://llama32-ollama.ns.svc:11434", "ready": true}
  },
  "consumers": [
    {"name": "notes", "hosts": ["llama32-notes", "llama32-notes.ns", "llama32-notes.ns.svc",
     "llama32-notes.ns.svc.cluster.local"], "weight": 10, "api": "chat"}
  ],
  "fallback": true,
  "timeouts": {"connectSeconds": 2, "firstByteSeconds": 60, "totalSeconds": 600},
  "maxBodyBytes": 10485760
}
"""


def table(**overrides: Any) -> RoutingTable:
    raw = json.loads(CONTRACT)
    raw.update(overrides)
    return RoutingTable.model_validate(raw)


def test_the_contract_example_parses_with_camel_case_keys() -> None:
    parsed = RoutingTable.model_validate_json(CONTRACT)
    assert parsed.timeouts.first_byte_seconds == 60
    assert parsed.max_body_bytes == 10 * 1024 * 1024
    assert parsed.consumers[0].weight == 10
    assert parsed.engines.ollama is not None and parsed.engines.ollama.ready
    # And it round-trips to the same camelCase JSON the operator writes.
    assert parsed.dump()["timeouts"] == {
        "connectSeconds": 2.0,
        "firstByteSeconds": 60.0,
        "totalSeconds": 600.0,
    }


def test_ollama_is_optional_and_unknown_fields_are_ignored() -> None:
    parsed = table(engines={"vllm": {"url": "http://v:8000"}}, futureField={"x": 1})
    assert parsed.engines.ollama is None
    assert parsed.engines.vllm.ready  # ready defaults to true


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"consumers": [{"name": "a", "weight": 101}]}, "less than or equal to 100"),
        ({"consumers": [{"name": "a", "api": "images"}]}, "'chat' or 'embeddings'"),
        ({"consumers": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
        (
            {"consumers": [{"name": "a", "hosts": ["x"]}, {"name": "b", "hosts": ["X:80"]}]},
            "belongs to both",
        ),
        ({"engines": {"vllm": {"url": "llama32-vllm:8000"}}}, "should match pattern"),
        ({"engines": {"ollama": {"url": "http://o:11434"}}}, "vllm"),
        ({"maxBodyBytes": 0}, "greater than 0"),
    ],
)
def test_invalid_tables_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        table(**overrides)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("llama32-notes", "llama32-notes"),
        ("llama32-notes:80", "llama32-notes"),
        ("LLAMA32-Notes.ns.svc.cluster.local.:8080", "llama32-notes.ns.svc.cluster.local"),
        ("[::1]:8080", "[::1]"),
        ("10.0.0.1:80", "10.0.0.1"),
    ],
)
def test_host_normalisation(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


def test_consumer_lookup_by_host_and_by_override() -> None:
    routes = compile_table(table())
    notes = routes.consumer("llama32-notes.ns.svc:80", None)
    assert notes is not None and notes.name == "notes"
    assert routes.consumer("elsewhere", "notes") is notes
    assert routes.consumer("llama32-notes", "nobody") is None  # an override is never ignored
    assert routes.consumer(None, None) is None
    assert routes.accepts("llama3.2") and routes.accepts("llama3.2:latest")
    assert not routes.accepts("llama3.2:1b")


def readiness(vllm: bool, ollama: bool | None, weight: int = 10) -> tuple[float, list[str]]:
    engines: dict[str, Any] = {"vllm": {"url": "http://v:8000", "ready": vllm}}
    if ollama is not None:
        engines["ollama"] = {"url": "http://o:11434", "ready": ollama}
    consumers = [{"name": "notes", "weight": weight}]
    route = compile_table(table(engines=engines, consumers=consumers)).by_name["notes"]
    return route.vllm_share, [t.name for t in route.via_vllm]


def test_readiness_decides_the_effective_share_and_the_fallback() -> None:
    assert readiness(True, True) == (10, [VLLM, OLLAMA])
    assert readiness(False, True) == (0, [VLLM, OLLAMA])  # vLLM not ready: no traffic
    assert readiness(True, False) == (100, [VLLM])  # Ollama not ready: no traffic, no fallback
    assert readiness(True, None) == (100, [VLLM])  # no Ollama at all
    # Neither ready: the table may be stale; keep the weight rather than refuse everything.
    assert readiness(False, False) == (10, [VLLM])
    fallback_off = compile_table(table(fallback=False)).by_name["notes"]
    assert [t.name for t in fallback_off.via_vllm] == [VLLM]


def test_pick_realises_the_weight() -> None:
    route = compile_table(table()).by_name["notes"].kinds["chat"]  # weight 10
    rng = random.Random(1)
    draws = 100_000
    to_vllm = sum(route.pick(rng.random())[0].name == VLLM for _ in range(draws))
    assert abs(to_vllm / draws - 0.10) < 0.005
    for weight, expected in ((0, OLLAMA), (100, VLLM)):
        edge = compile_table(table(consumers=[{"name": "n", "weight": weight}])).by_name["n"]
        assert {edge.kinds["chat"].pick(d)[0].name for d in (0.0, 0.5, 0.999999)} == {expected}


def test_upstream_urls_are_prebuilt() -> None:
    routes = compile_table(table(engines={"vllm": {"url": "http://v.ns.svc:8000/"}}))
    assert str(routes.targets[VLLM].urls["/v1/chat/completions"]) == (
        "http://v.ns.svc:8000/v1/chat/completions"
    )


def test_engine_urls_can_be_replaced_for_a_router_outside_the_cluster() -> None:
    from inferops.api.routing import RoutingTable, with_engine_urls

    table = RoutingTable.model_validate(
        {
            "model": "m",
            "engines": {
                "vllm": {"url": "http://a.ns.svc:8000"},
                "ollama": {"url": "http://b.ns.svc:11434", "ready": False},
            },
            "consumers": [],
        }
    )
    replaced = with_engine_urls(table, {"ollama": "http://127.0.0.1:9"})
    assert replaced.engines.vllm.url == "http://a.ns.svc:8000"
    assert replaced.engines.ollama is not None
    assert replaced.engines.ollama.url == "http://127.0.0.1:9"
    assert replaced.engines.ollama.ready is False
