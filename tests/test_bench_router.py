"""The router benchmark's pure parts: its configuration reads runs from before the peers, the
table divides the router's figures by each peer's (and not the conditions'), and LiteLLM is
configured as a random split over the two backends. Nothing is started or measured here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.router import peers, report
from bench.router.config import BASELINE, REALISTIC, Config


def test_a_run_from_before_the_peers_reads_as_three_paths_and_one_profile() -> None:
    old = Config(concurrencies=(64,)).to_json()
    for key in ("paths", "profiles"):
        del old[key]
    old.update(ttft_ms=50.0, token_ms=20.0, tokens=16)
    config = Config.from_json(old)
    assert config.paths == ("direct", "router", "nginx")
    assert config.peers == ("nginx",)
    assert config.profiles == (BASELINE,)


def test_config_round_trips() -> None:
    config = Config(paths=("direct", "router", "litellm"), concurrencies=(1, 64))
    assert Config.from_json(config.to_json()) == config
    assert config.proxies == ("router", "litellm")
    assert Config(paths=("direct", "nginx")).peers == ()  # no router: nothing to divide


def _stream(path: str, ttft_p50: float, errors: int = 0) -> dict[str, Any]:
    return {
        "kind": "stream",
        "repeat": 0,
        "path": path,
        "profile": REALISTIC.name,
        "concurrency": 64,
        "ttft_ms": {"p50": ttft_p50, "p99": ttft_p50 * 2},
        "e2e_ms": {"p50": 400.0, "p99": 500.0},
        "requests_per_s": 100.0,
        "errors": errors,
        "load_cores": {"busy": 0.5, "others": 0.0},
        "proxy_core": {"busy": 0.5, "others": 0.0},
        "proxy": {"cpu_s_per_1k": 1.0, "rss_mib": 50.0},
    }


SECTION = report.stream_section(REALISTIC, 64)


def _streaming(*phases: dict[str, Any]) -> tuple[Config, list[report.Row]]:
    """The rows of the streaming section at 64 streams, one repeat of each path's `phases`."""
    paths = tuple(phase["path"] for phase in phases)
    config = Config(paths=paths, profiles=(REALISTIC,), concurrencies=(64,), repeats=1)
    table = report.Table(config)
    report._streaming(table, SECTION, list(phases))
    return config, table.rows


def test_the_table_has_a_ratio_per_peer_and_none_for_conditions() -> None:
    config, found = _streaming(
        _stream("direct", 20.0),
        _stream("router", 22.0),
        _stream("nginx", 20.5),
        _stream("litellm", 220.0, errors=3),
    )
    rows = {row.figure: row for row in found}
    ttft = rows["TTFT p50"]
    assert ttft.ratios["nginx"] == 22.0 / 20.5
    assert ttft.ratios["litellm"] == 22.0 / 220.0
    added = rows["added TTFT p50"]
    assert added.values["litellm"]["median"] == 200.0
    assert math.isclose(added.ratios["litellm"], 2.0 / 200.0)
    assert rows["errors"].ratios == {}
    assert rows["load cores busy"].ratios == {}
    text = report.render(found, [], config)
    assert "router/nginx" in text and "router/litellm" in text


def test_litellm_splits_one_model_over_both_backends_at_random() -> None:
    doc = peers.litellm_config((9001, 9002))
    bases = [d["litellm_params"]["api_base"] for d in doc["model_list"]]
    assert bases == ["http://127.0.0.1:9001/v1", "http://127.0.0.1:9002/v1"]
    assert {d["model_name"] for d in doc["model_list"]} == {"llama3.2"}
    assert doc["router_settings"] == {"routing_strategy": "simple-shuffle"}
    assert doc["litellm_settings"]["callbacks"] == []


def test_vllm_router_gets_both_backends_and_the_random_policy() -> None:
    cmd = peers.vllm_router_command(Path("/venv"), 8000, 8001, (9001, 9002))
    workers = cmd.index("--worker-urls")
    assert cmd[workers + 1 : workers + 3] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert "--policy=random" in cmd


def test_the_latency_targets_compare_with_the_peers_of_the_same_run() -> None:
    # Added p50: router 1.0, nginx 0.5 (1.5x is 0.75), vllm-router 2.0; p99 twice that.
    config, rows = _streaming(
        _stream("direct", 20.0),
        _stream("router", 21.0),
        _stream("nginx", 20.5),
        _stream("vllm-router", 22.0),
    )
    found = {
        v.target.rpartition(", ")[0] + " " + v.target.rpartition(", ")[2]: v.passed
        for v in report._latency_verdicts(rows, config, SECTION)
    }
    where = "added TTFT {} at 64 streams (realistic profile) vs {}"
    assert found == {
        where.format("p50", "nginx"): False,
        where.format("p50", "vllm-router"): True,
        where.format("p99", "direct"): True,  # 2.0 ms added, the limit
        where.format("p99", "nginx"): False,
        where.format("p99", "vllm-router"): True,
    }


def test_the_two_worker_router_is_asked_for_and_pinned_to_two_cores(tmp_path: Path) -> None:
    from bench.router.__main__ import make_config, parse_args
    from bench.router.stack import Stack

    assert "router-2w" in Config().paths  # the one command measures every target
    config = make_config(parse_args(["--quick", "--paths", "router-2w", "router"]))
    assert config.paths == ("direct", "router", "router-2w")
    assert config.peers == ("router-2w",)  # the table shows router/router-2w
    config = Config(proxy_cpus=frozenset({0}), load_cpus=frozenset({1, 2, 3}))
    assert config.cpus_of("router") == {0}
    assert config.cpus_of("router-2w") == {0, 1}
    stack = Stack(config, tmp_path, {})
    one, _ = stack._router((9001, 9002))
    two, _ = stack._router((9001, 9002), path="router-2w")
    assert "--workers=1" in one.cmd and one.cpus == {0}
    assert "--workers=2" in two.cmd and two.cpus == {0, 1} and two.name == "router-2w"


def test_an_added_time_whose_repeats_span_zero_is_called_noise() -> None:
    assert "within noise" in report._basis({"min": -2.0, "median": 0.5, "max": 1.0, "n": 3}, "b")
    assert "within noise" in report._basis({"min": -3.0, "median": -2.0, "max": -1.0, "n": 3}, "b")
    assert report._basis({"min": 0.2, "median": 0.5, "max": 1.0, "n": 3}, "b") == "b"
