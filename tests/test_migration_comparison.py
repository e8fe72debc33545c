"""The comparison users migrate for (inferops.migration.comparison): how analysis windows are
pooled, and the one line `kubectl ib status` prints."""

from __future__ import annotations

import pytest

from inferops.api.status import EngineComparison
from inferops.migration.comparison import add, pool, summary
from inferops.migration.figures import EngineFigures, Figures


def eng(
    requests: float,
    errors: float = 0,
    ttft: float | None = None,
    tpot: float | None = None,
    observations: float = 0,
    tokens: float = 0,
) -> EngineFigures:
    return EngineFigures(
        requests=requests,
        errors=errors,
        ttft_p95=ttft,
        tpot_p95=tpot,
        ttft_p50=None if ttft is None else ttft / 2,
        tpot_p50=None if tpot is None else tpot / 2,
        ttft_count=observations,
        tpot_count=observations,
        output_tokens=tokens,
    )


def test_counts_are_summed_so_the_error_rate_is_request_weighted() -> None:
    """3 errors of 10 requests, then 0 of 990: 0.3% over the migration, not the 15% a mean of
    the two windows' rates would say."""
    pooled = pool(pool(None, eng(10, errors=3), 10), eng(990), 30)
    assert pooled.windows == 2
    assert (pooled.requests, pooled.errors, pooled.seconds) == (1000, 3, 40)
    assert pooled.error_rate == 0.003
    assert pooled.requests_per_second == 25


def test_quantiles_are_weighted_by_their_observations() -> None:
    """A quiet window (2 streamed answers, slow) weighs 2/102 of the pooled quantile."""
    pooled = pool(
        pool(None, eng(100, ttft=0.2, tpot=0.02, observations=100, tokens=1000), 10),
        eng(2, ttft=5.0, tpot=0.5, observations=2, tokens=10),
        10,
    )
    assert pooled.ttft_p95 == pytest.approx((0.2 * 100 + 5.0 * 2) / 102, rel=1e-3)
    assert pooled.ttft_p50 == pytest.approx((0.1 * 100 + 2.5 * 2) / 102, rel=1e-3)
    assert pooled.tpot_p95 == pytest.approx((0.02 * 100 + 0.5 * 2) / 102, rel=1e-3)
    assert pooled.ttft_observations == 102
    assert pooled.output_tokens_per_second == 50.5
    # A window without a figure (nothing streamed) leaves it as it was.
    same = pool(pooled, eng(50), 10)
    assert (same.ttft_p95, same.ttft_observations) == (pooled.ttft_p95, 102)


def test_figures_are_rounded_like_the_rest_of_status() -> None:
    pooled = pool(None, eng(3, errors=1, ttft=0.123456, observations=3), 7)
    assert pooled.error_rate == 0.3333
    assert pooled.ttft_p95 == 0.1235
    assert pooled.requests_per_second == 0.4286


def test_add_skips_failed_reads_and_ollama_at_full() -> None:
    window = Figures(
        vllm=eng(50, ttft=0.1, observations=50), ollama=eng(50, ttft=0.3, observations=50)
    )
    one = add(None, window, with_ollama=True, seconds=60, min_requests=10)
    assert one.vllm is not None and one.ollama is not None
    assert one.vllm.seconds == 60  # the source did not measure the window: the interval
    failed = add(
        one,
        Figures.failed("prometheus answered HTTP 500"),
        with_ollama=True,
        seconds=60,
        min_requests=10,
    )
    assert failed == one
    measured = Figures(vllm=window.vllm, ollama=window.ollama, window_seconds=9.5)
    at_full = add(one, measured, with_ollama=False, seconds=60, min_requests=10)
    assert at_full.vllm is not None and at_full.vllm.seconds == 69.5
    assert at_full.ollama == one.ollama
    quiet = Figures(vllm=eng(0), ollama=None, window_seconds=10)
    assert add(at_full, quiet, with_ollama=True, seconds=60, min_requests=10) == at_full


def engine(
    ttft: float | None, tpot: float | None, error_rate: float, seen: float = 100
) -> EngineComparison:
    counts = {"requests": seen, "ttft_observations": seen, "tpot_observations": seen}
    return EngineComparison(ttft_p95=ttft, tpot_p95=tpot, error_rate=error_rate, **counts)


@pytest.mark.parametrize(
    ("vllm", "ollama", "line"),
    [
        (engine(0.1, 0.01, 0.001), engine(0.31, 0.024, 0.003),
         "TTFT p95 3.1x faster, TPOT p95 2.4x faster, errors 0.1% vs 0.3%"),
        # vLLM slower: "slower", never a ratio below 1 called faster.
        (engine(0.62, 0.03, 0.0), engine(0.31, 0.024, 0.0),
         "TTFT p95 2.0x slower, TPOT p95 1.2x slower, errors 0% vs 0%"),
        (engine(0.1, 0.001, 0.0), engine(0.102, 0.024, 0.125),
         "TTFT p95 about the same, TPOT p95 24x faster, errors 0% vs 12%"),
        (engine(0.1, 0.01, 0.0, seen=4), engine(0.3, 0.02, 0.0),
         "TTFT p95: too few samples (vLLM 4, Ollama 100, need 10), TPOT p95: too few samples "
         "(vLLM 4, Ollama 100, need 10), errors: too few requests (vLLM 4, Ollama 100, need 10)"),
        (engine(None, 0.01, 0.0), engine(0.3, 0.02, 0.0),
         "TTFT p95: no data, TPOT p95 2.0x faster, errors 0% vs 0%"),
        (None, engine(0.3, 0.02, 0.0), "no vLLM figures yet"),
        (engine(0.3, 0.02, 0.0), None, "no Ollama figures yet"),
    ],
)  # fmt: skip
def test_summary(vllm: EngineComparison | None, ollama: EngineComparison | None, line: str) -> None:
    assert summary(vllm, ollama, 10) == line


def test_summary_of_embeddings_has_only_error_rates() -> None:
    line = summary(engine(None, None, 0.0), engine(None, None, 0.01), 10, latency=False)
    assert line == "errors 0% vs 1%"
