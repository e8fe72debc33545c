"""Embeddings move only with compatible vectors. Pure.

A consumer that stored Ollama's vectors in an index (a RAG service) breaks silently when its
queries are embedded by another model, or the same model pooled another way: the nearest
neighbours are no longer near. So before any embeddings traffic moves from Ollama to vLLM,
the operator asks both engines for the vectors of the same inputs
(`spec.migration.embeddings.inputs`, `inferops.migration.vector_probe`) and compares each
input's two vectors by cosine similarity; below `minCosine` on any input, embeddings stay on
Ollama and status says why, with the figure.

Two ways vLLM can take embeddings traffic, both guarded here:
- `deployment`: spec.vllm.embeddings, vLLM's embeddings deployment. Each consumer has an
  embeddings weight apart from its chat weight (`status.consumers[].embeddings`): 100 once
  its migration gave it any live weight and the check passed, else 0 (rolled back with it).
- `weight`: spec.vllm itself runs the pooling runner (`--runner pooling`), so a consumer's
  weight moves its embeddings: the consumer is held at 0% until the check passes.

An embeddings consumer (`api: embeddings`) is held the same way whenever vLLM serves
embeddings at all, since its migration moves nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from inferops.api.migration import seconds
from inferops.api.spec import InferenceBackendSpec
from inferops.api.status import ConsumerStatus, EmbeddingsStatus, VectorCheck
from inferops.builders.router import vllm_facts

Mover = Literal["deployment", "weight"]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def mover(spec: InferenceBackendSpec) -> Mover | None:
    """How embeddings traffic reaches vLLM under `spec`, if it does at all."""
    if spec.vllm.embeddings is not None:
        return "deployment"
    kinds = vllm_facts(spec.vllm)["kinds"]
    if isinstance(kinds, list) and "embeddings" in kinds:
        return "weight"
    return None


def key(spec: InferenceBackendSpec) -> str:
    """A hash of what both engines' vectors depend on: the vLLM that serves embeddings (its
    model, dtype, image and arguments), Ollama's model and the inputs. A change runs the check
    again."""
    server = spec.vllm.embeddings or spec.vllm
    doc = {
        "vllm": server.model_dump(
            mode="json", include={"model", "dtype", "image", "extra_args", "max_model_len"}
        ),
        "ollama": spec.ollama.model if spec.ollama and spec.ollama.enabled else None,
        "inputs": spec.migration.embeddings.inputs if spec.migration else [],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _parse(value: str) -> datetime:
    return datetime.strptime(value, TIME_FORMAT)


def current(spec: InferenceBackendSpec, check: VectorCheck | None) -> VectorCheck | None:
    """`check` if it still speaks for `spec` (same key), else None."""
    return check if check is not None and check.key == key(spec) else None


def due(spec: InferenceBackendSpec, last: VectorCheck | None, now: datetime) -> bool:
    """Whether the operator should compare the vectors now: vLLM serves embeddings, Ollama
    runs, and there is no check for this spec yet, or the last one did not pass and
    `recheck` has gone by (an engine may have been fixed without a spec change: a new pod)."""
    migration = spec.migration
    if migration is None or mover(spec) is None or not _ollama(spec):
        return False
    check = current(spec, last)
    if check is None:
        return True
    if check.verdict == "Pass":
        return False
    return now >= _parse(check.time) + timedelta(seconds=seconds(migration.embeddings.recheck))


def _ollama(spec: InferenceBackendSpec) -> bool:
    return spec.ollama is not None and spec.ollama.enabled


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0 when either vector is all zeros."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def judge(
    vllm: list[list[float]] | str,
    ollama: list[list[float]] | str,
    min_cosine: float,
    check_key: str,
    at: str,
) -> VectorCheck:
    """The verdict on both engines' vectors for the same inputs, in order. A string instead
    of vectors says why that engine could not be asked: Inconclusive."""
    base = {"min_cosine": min_cosine, "time": at, "key": check_key}
    problems = [
        f"{name}: {v}" for name, v in (("vLLM", vllm), ("Ollama", ollama)) if isinstance(v, str)
    ]
    if problems or isinstance(vllm, str) or isinstance(ollama, str):
        return VectorCheck(verdict="Inconclusive", message="; ".join(problems), **base)
    if len(vllm) != len(ollama) or not vllm:
        return VectorCheck(
            verdict="Fail",
            inputs=len(ollama),
            message=f"vLLM returned {len(vllm)} vectors for {len(ollama)} inputs",
            **base,
        )
    dims = {(len(a), len(b)) for a, b in zip(vllm, ollama, strict=True)}
    if any(a != b for a, b in dims):
        shown = ", ".join(f"{a} vs {b}" for a, b in sorted(dims) if a != b)
        return VectorCheck(
            verdict="Fail",
            inputs=len(vllm),
            message=f"vectors of other dimensions (vLLM vs Ollama: {shown}): another model",
            **base,
        )
    low = min(cosine(a, b) for a, b in zip(vllm, ollama, strict=True))
    figure = float(f"{low:.4g}")
    n = len(vllm)
    if low >= min_cosine:
        return VectorCheck(
            verdict="Pass",
            cosine=figure,
            inputs=n,
            message=f"vectors alike: lowest cosine {figure:g} >= {min_cosine:g} over {n} inputs",
            **base,
        )
    return VectorCheck(
        verdict="Fail",
        cosine=figure,
        inputs=n,
        message=f"vectors differ: lowest cosine {figure:g} < {min_cosine:g} over {n} inputs "
        "(another model, or another pooling or normalisation)",
        **base,
    )


def passed(spec: InferenceBackendSpec, check: VectorCheck | None) -> bool:
    """Embeddings may move: the current check passed, or there is no Ollama whose vectors a
    stored index could hold (vLLM serves every embeddings request then anyway)."""
    if not _ollama(spec):
        return True
    check = current(spec, check)
    return check is not None and check.verdict == "Pass"


def why_not(spec: InferenceBackendSpec, check: VectorCheck | None) -> str:
    """Why embeddings do not move yet, in words."""
    check = current(spec, check)
    if check is None:
        return "both engines' vectors are not compared yet"
    if check.verdict == "Inconclusive":
        return f"both engines' vectors could not be compared ({check.message})"
    return check.message


def holds(spec: InferenceBackendSpec, api: str, check: VectorCheck | None) -> str | None:
    """Why a Pending consumer must stay at 0% for its vectors, or None when it may start: its
    weight would move embeddings (the pooling runner on spec.vllm, or an embeddings consumer
    whenever vLLM serves embeddings) and the check has not passed."""
    how = mover(spec)
    if how is None or (how == "deployment" and api != "embeddings"):
        return None
    if passed(spec, check):
        return None
    return f"held at 0%: embeddings move only with compatible vectors: {why_not(spec, check)}"


def embeddings_status(
    spec: InferenceBackendSpec, c: ConsumerStatus, check: VectorCheck | None
) -> EmbeddingsStatus | None:
    """A consumer's embeddings weight with the embeddings deployment: 100 once its migration
    gave it any live weight (or it is Migrated) and the vectors agree, else 0. None without
    the deployment."""
    if mover(spec) != "deployment":
        return None
    live = c.weight > 0 or c.phase == "Migrated"
    if not live:
        return EmbeddingsStatus(weight=0, message="on Ollama until the consumer's live weight")
    if not passed(spec, check):
        return EmbeddingsStatus(
            weight=0, held=True, message=f"held on Ollama: {why_not(spec, check)}"
        )
    figure = current(spec, check)
    said = figure.message if figure is not None else "no Ollama to compare with"
    return EmbeddingsStatus(weight=100, message=f"on vLLM: {said}")


__all__ = [
    "Mover",
    "cosine",
    "current",
    "due",
    "embeddings_status",
    "holds",
    "judge",
    "key",
    "mover",
    "passed",
    "why_not",
]
