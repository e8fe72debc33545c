"""One routing-table model for both sides: the operator's builder produces the router's own
`RoutingTable` (with live weights and a revision), the router reads exactly what the builder
wrote, and exports the revision of the table it serves."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from typing import Any

from inferops.api.routing import (
    REVISION_METRIC,
    ROUTES_KEY,
    Consumer,
    Engine,
    Engines,
    RoutingTable,
    with_revision,
)
from inferops.builders import desired_children
from inferops.builders.router import TABLE_KEY, config_map, routing_table
from inferops.router.metrics import RouterMetrics
from inferops.router.routes import VLLM, compile_table
from inferops.router.sources import parse
from inferops.router.state import RouterState
from tests.conftest import OWNER, make_spec
from tests.router.conftest import Router
from tests.router.test_routing import sample

CONSUMERS = [
    {"name": "notes", "weight": 10},
    {"name": "rag"},
    {"name": "ner", "api": "embeddings", "weight": 100},
]
READY = {"vllm": True, "ollama": True}


def weights_of(table: RoutingTable) -> dict[str, int]:
    return {c.name: c.weight for c in table.consumers}


def written_table(objects: list[dict[str, Any]]) -> str:
    (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return str(cm["data"][TABLE_KEY])


def test_the_builder_returns_the_model_the_router_reads() -> None:
    spec = make_spec(consumers=CONSUMERS)
    table = routing_table(spec, OWNER, READY)
    assert isinstance(table, RoutingTable)
    assert TABLE_KEY == ROUTES_KEY
    text = str(config_map(spec, OWNER, READY)["data"][TABLE_KEY])
    assert text == json.dumps(table.dump(), indent=2, sort_keys=True)
    parsed = parse(text, "configmap")
    assert parsed == table  # what the router validates is what the operator built
    routes = compile_table(parsed)
    assert routes.by_name["notes"].weight == 10
    assert routes.by_host["llama32-notes.ai.svc"].name == "notes"
    assert routes.targets[VLLM].base_url == "http://llama32-vllm.ai.svc:8000"


def test_live_weights_replace_spec_weights_per_consumer() -> None:
    spec = make_spec(consumers=CONSUMERS)
    assert weights_of(routing_table(spec, OWNER, READY)) == {"notes": 10, "rag": 0, "ner": 100}
    assert weights_of(routing_table(spec, OWNER, READY, None)) == {
        "notes": 10,
        "rag": 0,
        "ner": 100,
    }
    # `rag` and `ner` are missing from the live weights: they keep their spec weights.
    live = routing_table(spec, OWNER, READY, {"notes": 40})
    assert weights_of(live) == {"notes": 40, "rag": 0, "ner": 100}
    # Weights for consumers not in the spec are ignored, not invented.
    assert weights_of(routing_table(spec, OWNER, READY, {"gone": 50})) == weights_of(
        routing_table(spec, OWNER, READY)
    )


def test_live_weights_reach_the_configmap_through_desired_children() -> None:
    spec = make_spec(consumers=CONSUMERS)
    text = written_table(desired_children(spec, OWNER, READY, weights={"rag": 25}))
    table = parse(text, "configmap")
    assert isinstance(table, RoutingTable)
    assert weights_of(table) == {"notes": 10, "rag": 25, "ner": 100}
    default = parse(written_table(desired_children(spec, OWNER, READY)), "configmap")
    assert isinstance(default, RoutingTable)
    assert weights_of(default) == {"notes": 10, "rag": 0, "ner": 100}


def test_revision_is_the_crc32_of_the_rest_of_the_table() -> None:
    spec = make_spec(consumers=CONSUMERS)
    table = routing_table(spec, OWNER, READY)
    doc = table.dump()
    del doc["revision"]
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert table.revision == zlib.crc32(canonical.encode())
    assert table.revision != 0
    # Pure: the same inputs give the same revision; it does not depend on itself.
    assert routing_table(spec, OWNER, READY) == table
    assert with_revision(table) == table
    assert with_revision(table.model_copy(update={"revision": 7})) == table


def test_revision_changes_with_what_the_router_serves() -> None:
    spec = make_spec(consumers=CONSUMERS)
    base = routing_table(spec, OWNER, READY).revision
    assert routing_table(spec, OWNER, READY, {"notes": 11}).revision != base
    assert routing_table(spec, OWNER, {"vllm": True, "ollama": False}).revision != base
    assert routing_table(spec, OWNER, READY, {"notes": 10}).revision == base


def test_revision_survives_the_configmap_round_trip() -> None:
    spec = make_spec(consumers=CONSUMERS)
    parsed = parse(str(config_map(spec, OWNER, READY, {"notes": 60})["data"][TABLE_KEY]), "cm")
    assert isinstance(parsed, RoutingTable)
    assert parsed.revision == routing_table(spec, OWNER, READY, {"notes": 60}).revision
    assert with_revision(parsed) == parsed  # the router could recheck it and agree


def test_builders_do_not_import_the_router() -> None:
    code = (
        "import sys, inferops.builders, inferops.api.routing\n"
        "bad = sorted(m for m in sys.modules if m.startswith('inferops.router'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_installing_a_table_exports_its_revision() -> None:
    metrics = RouterMetrics()
    state = RouterState(metrics)
    table = with_revision(
        RoutingTable(
            model="m",
            engines=Engines(vllm=Engine(url="http://v.ns.svc:8000")),
            consumers=[Consumer(name="a", hosts=["a"], weight=50)],
        )
    )
    assert metrics.registry.get_sample_value(REVISION_METRIC) == 0
    assert state.install(table)
    assert metrics.registry.get_sample_value(REVISION_METRIC) == table.revision
    # Engine URLs replaced for a router outside the cluster: still the operator's revision.
    moved = RouterState(RouterMetrics(), engine_urls={"vllm": "http://127.0.0.1:9"})
    assert moved.install(table)
    assert moved.metrics.registry.get_sample_value(REVISION_METRIC) == table.revision


async def test_the_router_serves_and_reports_the_revision_it_was_given(router: Router) -> None:
    assert sample(await router.metrics(), REVISION_METRIC) == 0  # a table without one
    await router.set_table(revision=4_000_000_123)  # CRC-32 values reach 2**32 - 1
    assert router.state.routes is not None
    assert router.state.routes.table.revision == 4_000_000_123
    assert sample(await router.metrics(), REVISION_METRIC) == 4_000_000_123
    await router.set_weight("notes", 50)
    await router.set_table(revision=17)
    assert sample(await router.metrics(), REVISION_METRIC) == 17
