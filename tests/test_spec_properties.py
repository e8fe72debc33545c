"""Property-based: thousands of generated InferenceBackend specs, valid and broken
(`testsupport/spec_strategies.py`). Each is refused by the model with a message naming a field, or
accepted and built into children without an exception, with no two children of one kind and
name unless the operator's own check refuses the spec naming the field.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, event, given, settings
from pydantic import ValidationError
from testsupport.spec_strategies import (
    Backend,
    backends,
    examples,
    fuzz_settings,
    valid_backends,
    whole_resource_problems,
)

from inferops.api.spec import InferenceBackendSpec
from inferops.builders import Owner, desired_children
from inferops.validation import describe_errors, service_name_clashes

# `spec.vllm.tensorParallelSize: ...`, `spec.consumers.0.name: ...`: a field, not just "spec".
NAMES_A_FIELD = re.compile(r"\bspec\.[A-Za-z]")
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

SETTINGS = fuzz_settings(
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, deadline=None
)


def check(backend: Backend) -> str:
    """Asserts the property for one spec; returns what happened (for the statistics)."""
    try:
        spec = InferenceBackendSpec.model_validate(backend.spec)
    except ValidationError as error:
        message = describe_errors(error)
        assert NAMES_A_FIELD.search(message), f"refusal names no field: {message}\n{backend}"
        return "refused by the model"
    owner = Owner(name=backend.name, namespace="ai", uid="0000-1111")
    clashes = service_name_clashes(spec, owner)
    if clashes:
        # The operator checks this before it builds anything (InvalidSpec, children left
        # as they are), so the builders never see such a spec.
        clauses = re.split(r"; (?=spec\.)", clashes)
        assert all(NAMES_A_FIELD.match(clause) for clause in clauses), clashes
        return "refused by the operator (Service name clash)"
    children = desired_children(spec, owner)
    json.dumps(children)  # plain JSON, what the API server receives
    keys = [(o["kind"], o["metadata"]["name"]) for o in children]
    duplicates = {k for k in keys if keys.count(k) > 1}
    assert not duplicates, f"two children share a kind and name: {duplicates}\n{backend}"
    for obj in children:
        meta = obj["metadata"]
        assert meta["namespace"] == owner.namespace
        assert meta["ownerReferences"][0]["uid"] == owner.uid
        if not whole_resource_problems(backend):
            grammar = DNS_1035 if obj["kind"] == "Service" else DNS_SUBDOMAIN
            limit = 63 if obj["kind"] == "Service" else 253
            assert grammar.match(meta["name"]) and len(meta["name"]) <= limit, (meta, backend)
    return "accepted"


@settings(SETTINGS, max_examples=examples(800))
@given(backends())
def test_every_spec_is_refused_naming_a_field_or_built(backend: Backend) -> None:
    event(check(backend))  # the share of each outcome: `pytest --hypothesis-show-statistics`


@settings(SETTINGS, max_examples=examples(200))
@given(valid_backends())
def test_specs_within_the_documented_ranges_are_accepted(backend: Backend) -> None:
    """The generator of valid specs is valid: otherwise the test above would only ever see
    refusals and prove nothing about the builders."""
    assert check(backend) == "accepted", backend
