"""Bad input at scale, against the API server: generated InferenceBackends, valid and broken
(`testsupport/spec_strategies.py`, the same as the unit tier's `tests/test_spec_properties.py`).

1. Each spec is sent as a server-side dry run (nothing is stored). It is either refused with
   a message naming a field, or accepted; then the objects the operator's builders make of
   the stored spec are server-side applied as dry runs too, and must all be accepted. The
   model and the API server must agree:
   - refused by the API server: the model, validating the JSON as strictly as the API server
     types it (no `"1"` for 1), refuses it too (or one of the CRD's rules on the whole
     resource, which the model cannot see, names it);
   - accepted: the model accepts what was stored (the operator reads the stored object,
     after the API server dropped nulls and applied defaults).
   Between the two, pydantic's lax mode coerces values the API server refuses (`"1"` for
   an integer): harmless, since the operator only ever reads stored objects.
2. A handful of accepted specs are created for real with the session's operator running:
   each is reconciled (status written for its generation), the operator stays up and logs
   no traceback, and the children are exactly the built ones, or none at all when the
   operator refuses the spec (InvalidSpec naming a field): never a partial set.

Examples: `INFEROPS_FUZZ_EXAMPLES` (`make fuzz`), else a quick run in `make test`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from pydantic import ValidationError
from testsupport.markers import needs
from testsupport.spec_strategies import Backend, backends, examples, whole_resource_problems

from e2e.harness import Kubectl, OperatorProcess, wait_for
from inferops.api import API_VERSION, KIND
from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner, desired_children
from inferops.builders.router import IDENTITY
from inferops.builders.router import name as router_name
from inferops.kube import Kube, apply_body, object_path, path
from inferops.validation import describe_errors, service_name_clashes

pytestmark = needs("cluster")

NAMES_A_FIELD = re.compile(r"\b(spec|metadata)\.[A-Za-z]")
DRY_RUN = {"dryRun": "All", "fieldValidation": "Strict"}
FIELD_MANAGER = "inferops-operator"

QUICK_DRY_RUNS = 250
CREATED = examples(6, cap=30)  # resources created for real, with the operator running

DRY_RUN_PHASES = [Phase.explicit, Phase.generate, Phase.shrink]
SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),  # one namespace and one client for all examples
)


class DryRun:
    """Server-side dry runs into one namespace, through the operator's own API client, from
    a synchronous test (hypothesis drives it)."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.namespace = namespace
        self.loop = asyncio.new_event_loop()
        self.kube = Kube.connect(FIELD_MANAGER, config_file=str(kubeconfig))
        self.requests = 0

    def close(self) -> None:
        self.loop.run_until_complete(self.kube.__aexit__())
        self.loop.close()

    def create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """(the object as it would be stored, "") or (None, the API server's refusal)."""
        return self.loop.run_until_complete(self._create(manifest))

    def apply(self, objects: list[dict[str, Any]]) -> list[str]:
        """Each object server-side applied as the operator applies it; the refusals."""
        return self.loop.run_until_complete(self._apply_all(objects))

    async def _create(self, manifest: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        self.requests += 1
        url = path(API_VERSION, KIND, self.namespace)
        response = await self.kube.request("POST", url, params=DRY_RUN, json_body=manifest)
        if response.status < 400:
            return dict(response.body), ""
        return None, _message(response.status, response.text)

    async def _apply_all(self, objects: list[dict[str, Any]]) -> list[str]:
        answers = await asyncio.gather(*(self._apply(obj) for obj in objects))
        return [answer for answer in answers if answer]

    async def _apply(self, obj: dict[str, Any]) -> str:
        self.requests += 1
        response = await self.kube.request(
            "PATCH",
            object_path(obj),
            params={**DRY_RUN, "fieldManager": FIELD_MANAGER, "force": "true"},
            content=apply_body(obj),  # encoded as the operator's Kube.apply encodes it
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if response.status < 400:
            return ""
        refusal = _message(response.status, response.text)
        return f"{obj['kind']} {obj['metadata']['name']}: {refusal}"


def _message(status: int, text: str) -> str:
    try:
        return f"{status} {json.loads(text)['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{status} {text}"


def _strict_refusal(spec: Any) -> str | None:
    """The model's refusal of the JSON as the API server types it (strict: no coercion)."""
    try:
        InferenceBackendSpec.model_validate_json(json.dumps(spec), strict=True)
    except ValidationError as error:
        return describe_errors(error)
    return None


@pytest.fixture
def dry_run(kubectl: Kubectl, crd: str, namespace: str) -> Iterator[DryRun]:
    client = DryRun(kubectl.kubeconfig, namespace)
    yield client
    client.close()


def judge(dry_run: DryRun, backend: Backend) -> str:
    """Asserts the property for one generated backend; returns its outcome."""
    stored, refusal = dry_run.create(backend.manifest(dry_run.namespace))
    model_refusal = _strict_refusal(backend.spec) or "; ".join(whole_resource_problems(backend))
    if stored is None:
        assert NAMES_A_FIELD.search(refusal), f"refused naming no field: {refusal}\n{backend}"
        assert model_refusal, f"the API server refuses what the model accepts: {refusal}\n{backend}"
        return "refused by the API server"
    try:
        spec = InferenceBackendSpec.model_validate(stored["spec"])
    except ValidationError as error:
        raise AssertionError(
            f"the API server accepts what the model refuses: {describe_errors(error)}\n"
            f"stored spec: {json.dumps(stored['spec'], sort_keys=True)}\n{backend}"
        ) from None
    owner = Owner(backend.name, dry_run.namespace, stored["metadata"]["uid"])
    if service_name_clashes(spec, owner):
        return "accepted, refused by the operator"
    refused = dry_run.apply(desired_children(spec, owner))
    assert not refused, (
        "the API server refuses children the operator builds from a spec it accepted:\n  "
        + "\n  ".join(refused)
        + f"\nstored spec: {json.dumps(stored['spec'], sort_keys=True)}\n{backend}"
    )
    return "accepted with its children"


# No "explain" phase: it re-runs the failing example hundreds of times against the API server.
@settings(SETTINGS, max_examples=examples(QUICK_DRY_RUNS), phases=DRY_RUN_PHASES)
@given(backend=backends())
def test_generated_specs_are_refused_naming_a_field_or_accepted_with_their_children(
    dry_run: DryRun, backend: Backend
) -> None:
    event(judge(dry_run, backend))


# -- created for real, with the operator running ---------------------------------------------


def _tame(backend: Backend) -> Backend:
    """The same spec with at most one pod per Deployment: every created resource must be
    reconciled within the deadline, and the simulated nodes are shared with other tests."""
    spec = json.loads(json.dumps(backend.spec))
    for part in ("vllm", "ollama", "router"):
        section = spec.get(part)
        if isinstance(section, dict) and isinstance(section.get("replicas"), int):
            section["replicas"] = min(section["replicas"], 1)
    return Backend(backend.name, spec, backend.mutations)


def _owned(kubectl: Kubectl, namespace: str, uid: str) -> set[tuple[str, str]]:
    kinds = "deployments,services,configmaps,serviceaccounts,roles,rolebindings,pvc"
    items = json.loads(kubectl.run("get", kinds, "-n", namespace, "-o", "json").stdout)["items"]
    return {
        (o["kind"], o["metadata"]["name"])
        for o in items
        if any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences", []))
        # The namespace's router identity, owned by every backend with consumers there.
        and o["metadata"]["name"] != IDENTITY
    }


def _draw(count: int) -> list[Backend]:
    """`count` generated backends with distinct names, each drawn on its own (a list drawn
    as one example holds mostly minimal specs)."""
    drawn: dict[str, Backend] = {}

    @settings(SETTINGS, max_examples=count, phases=[Phase.generate])
    @given(backend=backends())
    def draw(backend: Backend) -> None:
        drawn.setdefault(backend.name, _tame(backend))

    draw()
    return list(drawn.values())


def test_accepted_specs_are_reconciled_into_all_their_children_or_none(
    kubectl: Kubectl, operator: OperatorProcess, dry_run: DryRun
) -> None:
    namespace = dry_run.namespace
    log_start = operator.log.stat().st_size
    candidates = _draw(CREATED * 10)
    accepted = [b for b in candidates if dry_run.create(b.manifest(namespace))[0] is not None]
    # The largest specs: they set the most fields, so they reach the most of the builders.
    chosen = sorted(accepted, key=lambda b: len(json.dumps(b.spec)), reverse=True)[:CREATED]
    assert chosen, "no generated spec was accepted"
    for backend in chosen:
        kubectl.apply(backend.manifest(namespace), namespace)

    def pending(items: list[dict[str, Any]]) -> list[str]:
        return [
            o["metadata"]["name"]
            for o in items
            if o.get("status", {}).get("observedGeneration") != o["metadata"]["generation"]
        ]

    started = time.monotonic()
    deadline = started + 30
    items = kubectl.items("inferencebackends", namespace)
    while pending(items) and time.monotonic() < deadline:
        time.sleep(0.5)
        items = kubectl.items("inferencebackends", namespace)
    assert operator.process.returncode is None, "the operator exited"
    with operator.log.open("rb") as log:
        log.seek(log_start)
        written = log.read().decode(errors="replace")
    by_name = {b.name: b for b in chosen}
    stuck = pending(items)

    def report(obj: dict[str, Any]) -> str:
        name = obj["metadata"]["name"]
        children = sorted(_owned(kubectl, namespace, obj["metadata"]["uid"]))
        lines = [line for line in written.splitlines() if f"{namespace}/{name}" in line]
        return f"{by_name[name]}\n  children: {children}\n  " + "\n  ".join(lines[-3:])

    assert not stuck, "not reconciled within 30 s (no status for their generation):\n" + (
        "\n".join(report(o) for o in items if o["metadata"]["name"] in stuck)
    )
    for obj in items:
        backend = by_name[obj["metadata"]["name"]]
        spec = InferenceBackendSpec.model_validate(obj["spec"])
        owner = Owner(backend.name, namespace, obj["metadata"]["uid"])
        status = obj["status"]
        if status.get("phase") == "InvalidSpec":
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert NAMES_A_FIELD.search(ready["message"]), (ready, str(backend))
            assert service_name_clashes(spec, owner), (ready, str(backend))
            assert not _owned(kubectl, namespace, owner.uid), str(backend)
            continue
        built = {(o["kind"], o["metadata"]["name"]) for o in desired_children(spec, owner)}
        # The routing table waits for an engine with a Ready pod (which an unschedulable
        # engine never gets): the children are all built ones, or all but the table.
        wanted = (built, built - {("ConfigMap", router_name(owner))})
        wait_for(
            f"the children of {backend.name}",
            lambda owner=owner, wanted=wanted: _owned(kubectl, namespace, owner.uid) in wanted,
            timeout=30,
        )
    assert "Traceback" not in written, written[-4000:]
