"""Pure rendering of `kubectl ib status`: the resource and the time in, text out.

The resource is read as the plain dict the API server returns, not through the status
models: those forbid unknown fields, and a plugin older than the operator must still show
what it knows. Times are RFC 3339 strings; `now` is passed in so the output is testable.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

NONE = "-"


def _dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Obj]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def humanize(seconds: float) -> str:
    """A duration the way kubectl prints ages: `45s`, `4m12s`, `3h5m`, `2d3h`."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    """Time since an RFC 3339 timestamp, humanised; `-` without one."""
    parsed = parse_time(value)
    return humanize((now - parsed).total_seconds()) if parsed else NONE


def table(
    rows: Sequence[Sequence[str]], right: Collection[int] = (), indent: str = "", gap: int = 3
) -> list[str]:
    """Rows as aligned columns; the columns in `right` are right-aligned (figures)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append((indent + (" " * gap).join(cells)).rstrip())
    return lines


def steps_of(obj: Obj) -> list[Obj]:
    """spec.migration.steps, or [] without a migration."""
    return _list(_dict(_dict(obj.get("spec")).get("migration")).get("steps"))


def step_text(step: Any, steps: list[Obj]) -> str:
    """A step number (status counts from 1, as Events do) as `2/3`; `-` when there is none."""
    if not isinstance(step, int):
        return NONE
    return f"{step}/{len(steps)}" if steps else str(step)


def _step_weight(step: Any, steps: list[Obj]) -> str:
    if isinstance(step, int) and 1 <= step <= len(steps):
        found = _dict(steps[step - 1])
        if "shadow" in found:
            return " (shadow)"
        return f" ({found.get('weight', '?')}%)"
    return ""


def _count(value: Any) -> str:
    return str(round(value)) if isinstance(value, int | float) else NONE


def _percent(value: Any) -> str:
    """A fraction as a percentage figure: 0.008 -> `0.8`."""
    return f"{value * 100:.1f}" if isinstance(value, int | float) else NONE


def _ms(value: Any) -> str:
    """Seconds as milliseconds: whole above 10 ms, one decimal below."""
    if not isinstance(value, int | float):
        return NONE
    ms = value * 1000
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


# The figures compared per consumer: status key (also the gate's metric), label, format.
FIGURES = (
    ("errorRate", "error rate %", _percent),
    ("ttftP95", "TTFT p95 ms", _ms),
    ("tpotP95", "TPOT p95 ms", _ms),
)


def condition(status: Obj, type_: str) -> Obj | None:
    return next((c for c in _list(status.get("conditions")) if c.get("type") == type_), None)


def header(obj: Obj, now: datetime) -> list[str]:
    """Title, phase, Ready, migration progress, failover and the last action."""
    meta, spec, status = _dict(obj.get("metadata")), _dict(obj.get("spec")), obj.get("status")
    status = _dict(status)
    rows: list[tuple[str, str]] = []

    phase = str(status.get("phase", "Pending"))
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        phase += f" (for generation {observed}; the spec is at {generation})"
    rows.append(("Phase", phase))

    ready = condition(status, "Ready")
    if ready:
        text = f"{ready.get('status', 'Unknown')} ({ready.get('reason', '')})"
        if ready.get("message"):
            text += f": {ready['message']}"
        rows.append(("Ready", text))

    migration_spec = spec.get("migration")
    if not isinstance(migration_spec, dict):
        rows.append(("Migration", "none: weights are set in spec.consumers[].weight"))
    else:
        progress = _dict(status.get("migration"))
        migrated = str(progress.get("migrated") or "0/0")
        if progress.get("current"):
            migrated += f", in progress: {progress['current']}"
        rows.append(("Migrated", migrated))
        if migration_spec.get("paused"):
            rows.append(("Paused", "every consumer is held by spec.migration.paused"))
        if progress.get("failover"):
            text = "vLLM lost every ready pod: every consumer is on Ollama"
            if progress.get("vllmReadySince"):
                hold_down = migration_spec.get("failoverHoldDown", "2m")
                ready_for = age(progress["vllmReadySince"], now)
                text += f"; vLLM ready again for {ready_for} (hold-down {hold_down})"
            rows.append(("Failover", text))
        vectors = progress.get("vectors")
        if isinstance(vectors, dict):
            text = f"{vectors.get('verdict', '?')} {age(vectors.get('time'), now)} ago"
            if vectors.get("message"):
                text += f": {vectors['message']}"
            rows.append(("Vectors", text))
        last = progress.get("lastAction")
        if isinstance(last, dict):
            text = f"{last.get('action', '?')} {last.get('consumer', '')}".rstrip()
            text += f": {last.get('result', '?')} {age(last.get('time'), now)} ago"
            if last.get("message"):
                text += f": {last['message']}"
            rows.append(("Last action", text))

    title = f"InferenceBackend {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    return [title] + [f"{label + ':':<13}{value}" for label, value in rows]


LEGEND = (
    "SAMPLES: passed/failed/inconclusive samples of the step (inconclusive: in a row)",
    "IN-STEP: time since every router serves the step's weight",
)


def consumer_table(obj: Obj, now: datetime) -> list[str]:
    """One line per consumer: where it stands in the migration."""
    consumers = _list(_dict(obj.get("status")).get("consumers"))
    if not consumers:
        return ["No consumer status yet."]
    steps = steps_of(obj)
    rows = [["CONSUMER", "PHASE", "WEIGHT", "STEP", "IN-STEP", "SAMPLES", "LAST"]]
    for c in consumers:
        samples = "/".join(
            str(c.get(key, 0)) for key in ("passedSamples", "failedSamples", "inconclusiveSamples")
        )
        rows.append(
            [
                str(c.get("name", "?")),
                str(c.get("phase", "Manual")),
                f"{c.get('weight', 0)}%",
                step_text(c.get("step"), steps),
                age(c.get("stepStartedAt"), now),
                samples,
                str(_dict(c.get("lastAnalysis")).get("verdict", NONE)),
            ]
        )
    # The two columns whose heading alone does not say what they count.
    return [*table(rows), *LEGEND]


def shadow_rows(shadow: Obj, gate: Obj) -> list[str]:
    """A shadow step's comparisons: vLLM against Ollama, Ollama against itself."""
    vllm, noise = _dict(shadow.get("vllm")), _dict(shadow.get("noise"))

    def agreeing(counts: Obj) -> str:
        return _count(sum(counts.get(k, 0) for k in ("exact", "normalized", "similar")))

    def compared(counts: Obj) -> str:
        keys = ("exact", "normalized", "similar", "disagree", "error")
        return _count(sum(counts.get(k, 0) for k in keys))

    rows = [
        ["", "vLLM", "Ollama (noise)", "limit", "gate"],
        ["compared", compared(vllm), compared(noise), "", ""],
        ["agreeing", agreeing(vllm), agreeing(noise), "", ""],
        [
            "agreement %",
            _percent(gate.get("value")),
            _percent(gate.get("baseline")),
            _percent(gate.get("threshold")),
            str(gate.get("verdict", NONE)),
        ],
    ]
    return table(rows, right={1, 2, 3}, indent="  ", gap=2)


def analysis_block(consumer: Obj, steps: list[Obj], now: datetime) -> list[str]:
    """A consumer's last analysis, vLLM against Ollama, and its message; [] if neither."""
    name = consumer.get("name", "?")
    analysis = consumer.get("lastAnalysis")
    message = consumer.get("message")
    features = features_lines(consumer) + embeddings_lines(consumer)
    if not isinstance(analysis, dict) and not message and not features:
        return []
    lines: list[str] = []
    watch = consumer.get("watch")
    if isinstance(analysis, dict):
        step = analysis.get("step")
        where = f"step {step_text(step, steps)}{_step_weight(step, steps)}"
        # The last sample is the watch's once it has taken one (before: the step at 100%).
        if consumer.get("phase") == "Migrated" and _dict(watch).get("samples"):
            where = "watched after migration"
        sampled = age(analysis.get("time"), now)
        lines.append(f"{name}: {where}, sampled {sampled} ago: {analysis.get('verdict', '?')}")
        vllm = _dict(analysis.get("vllm"))
        ollama, mark = _dict(analysis.get("ollama")), ""
        if not ollama and isinstance(consumer.get("baseline"), dict):
            # At 100% Ollama serves the consumer nothing; the reference is the baseline.
            ollama, mark = consumer["baseline"], "*"
        every = _list(analysis.get("gates"))
        gates = {g.get("metric"): g for g in every if not g.get("kind")}
        shadow = _dict(consumer.get("shadow"))
        if shadow and _step_weight(step, steps) == " (shadow)":
            lines += shadow_rows(shadow, _dict(gates.get("shadowAgreement")))
            if analysis.get("message"):
                lines.append(f"  analysis: {analysis['message']}")
            if message:
                lines.append(f"  message: {message}")
            return lines
        rows = [
            ["", "vLLM", "Ollama" + mark, "limit", "gate"],
            ["requests", _count(vllm.get("requests")), _count(ollama.get("requests")), "", ""],
        ]
        for key, label, fmt in FIGURES:
            gate = gates.get(key, {})
            rows.append(
                [
                    label,
                    fmt(vllm.get(key)),
                    fmt(ollama.get(key)),
                    fmt(gate.get("threshold")),
                    str(gate.get("verdict", NONE)),
                ]
            )
        lines += table(rows, right={1, 2, 3}, indent="  ", gap=2)
        lines += kind_lines(every)
        if mark:
            lines.append("  * Ollama: the baseline from the last conclusive sample")
        if analysis.get("message"):
            lines.append(f"  analysis: {analysis['message']}")
    else:
        lines.append(f"{name}: no analysis yet")
    if isinstance(watch, dict):
        lines.append(f"  watch: {watch_text(watch, now)}")
    lines += comparison_lines(_dict(consumer.get("comparison")))
    if message:
        lines.append(f"  message: {message}")
    return lines + features


def kind_lines(gates: list[Obj]) -> list[str]:
    """The gates judged kind by kind (a consumer using several request kinds): one line, each
    kind with its worst verdict; [] when none was."""
    order = {"Pass": 0, "Inconclusive": 1, "Fail": 2}
    worst: dict[str, str] = {}
    for gate in gates:
        kind, verdict = gate.get("kind"), str(gate.get("verdict", NONE))
        if kind and order.get(verdict, 1) >= order.get(worst.get(kind, "Pass"), 0):
            worst[str(kind)] = verdict
    if not worst:
        return []
    return ["  by kind: " + ", ".join(f"{kind} {verdict}" for kind, verdict in worst.items())]


def features_lines(consumer: Obj) -> list[str]:
    """What the consumer uses that vLLM would not honour (`status.consumers[].features`):
    one line per finding, marked when acknowledged."""
    report = _dict(consumer.get("features"))
    found = _list(report.get("findings"))
    if not found:
        return []
    acknowledged = set(report.get("acknowledged") or [])
    held = " (held at 0% until the spec fixes it or `kubectl ib ack`)" if report.get("held") else ""
    lines = [f"  vLLM would not honour{held}:"]
    for finding in found:
        name = finding.get("feature", "?")
        mark = ", acknowledged" if name in acknowledged else ""
        count = _count(finding.get("requests"))
        lines.append(f"    {finding.get('message', name)} [{count} requests{mark}]")
    return lines


def watch_text(watch: Obj, now: datetime) -> str:
    """A migrated consumer's watch in words."""
    samples = watch.get("samples", 0)
    if watch.get("failing"):
        failed = watch.get("failedSamples", 0)
        return (
            f"FAILING for {age(watch.get('since'), now)} ({failed} failed samples in a row): "
            f"{watch.get('message', '')}"
        )
    return f"passing ({samples} samples since migrated)" if samples else "no sample yet"


def _rate(value: Any, unit: str) -> str:
    return f"{value:.3g} {unit}" if isinstance(value, int | float) else NONE


def comparison_lines(comparison: Obj) -> list[str]:
    """vLLM against Ollama over the migration: the summary line, then what each engine
    served (which follows the traffic share, not the engine's speed)."""
    if not comparison.get("summary"):
        return []
    lines = [f"  vLLM vs Ollama over the migration: {comparison['summary']}"]
    served = []
    for label, key in (("vLLM", "vllm"), ("Ollama", "ollama")):
        figures = _dict(comparison.get(key))
        if figures:
            served.append(
                f"{label} {_rate(figures.get('outputTokensPerSecond'), 'tokens/s')}, "
                f"{_rate(figures.get('requestsPerSecond'), 'requests/s')} "
                f"over {_count(figures.get('windows'))} windows"
            )
    if served:
        lines.append("  served: " + "; ".join(served))
    return lines


def embeddings_lines(consumer: Obj) -> list[str]:
    """Where the consumer's embeddings go, with spec.vllm.embeddings
    (`status.consumers[].embeddings`): decided apart from its chat weight."""
    embeddings = consumer.get("embeddings")
    if not isinstance(embeddings, dict):
        return []
    weight = embeddings.get("weight", 0)
    return [f"  embeddings: {weight}% on vLLM: {embeddings.get('message', '')}".rstrip(": ")]


def render_status(obj: Obj, now: datetime) -> str:
    """The whole `kubectl ib status` output."""
    sections = [header(obj, now), consumer_table(obj, now)]
    steps = steps_of(obj)
    for consumer in _list(_dict(obj.get("status")).get("consumers")):
        block = analysis_block(consumer, steps, now)
        if block:
            sections.append(block)
    return "\n\n".join("\n".join(section) for section in sections)


__all__ = [
    "age",
    "analysis_block",
    "comparison_lines",
    "consumer_table",
    "embeddings_lines",
    "features_lines",
    "header",
    "humanize",
    "render_status",
    "watch_text",
]
