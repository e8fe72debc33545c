"""Counting the operator's API requests from the API server's own audit log.

The operator and the benchmark both authenticate as the cluster's admin; the audit policy
records only that user's requests (not the controller manager's, the scheduler's or kwok's),
and the user agent tells the operator's (its client: `inferops-operator`; kopf's: `kopf/...`)
from the benchmark's own (`inferops-bench`).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: ["kubernetes-admin"]
  - level: None
"""

WRITES = ("create", "update", "patch", "delete", "deletecollection")


def apiserver_args(directory: Path) -> list[str]:
    policy = directory / "audit-policy.yaml"
    policy.write_text(POLICY)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={directory / 'audit.log'}",
        "--audit-log-format=json",
        "--audit-log-maxbackup=0",
        "--audit-log-maxsize=0",
    ]


def is_operator(user_agent: str) -> bool:
    return user_agent.startswith(("inferops-operator", "kopf/"))


def _time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _operator_events(log: Path, start: float, end: float) -> Iterator[dict[str, Any]]:
    """The operator's audit events of requests completed in [start, end) (epoch seconds)."""
    with log.open() as lines:
        for line in lines:
            event = json.loads(line)
            if is_operator(event.get("userAgent", "")) and (
                start <= _time(event["stageTimestamp"]) < end
            ):
                yield event


def _verb(event: dict[str, Any]) -> str:
    # A dry run is a request, not a write: counted apart.
    dry = " (dry run)" if "dryRun=" in event.get("requestURI", "") else ""
    return f"{event['verb']}{dry}"


def operator_requests(log: Path, start: float, end: float) -> dict[str, int]:
    """The operator's requests completed in [start, end) (epoch seconds), by verb."""
    counts = collections.Counter(_verb(event) for event in _operator_events(log, start, end))
    return dict(sorted(counts.items()))


def operator_requests_by_resource(log: Path, start: float, end: float) -> dict[str, int]:
    """The operator's requests completed in [start, end), by verb and resource
    (`patch deployments`, `patch (dry run) persistentvolumeclaims`, `patch
    inferencebackends/status`): where the API server's work for the operator goes."""
    counts: collections.Counter[str] = collections.Counter()
    for event in _operator_events(log, start, end):
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "?")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        counts[f"{_verb(event)} {resource}"] += 1
    return dict(sorted(counts.items()))


def writes(counts: dict[str, int]) -> int:
    return sum(n for verb, n in counts.items() if verb in WRITES)
