"""`spec.vllm.extraArgs` is judged the way vLLM's parser reads it: every spelling of a flag the
operator manages is refused naming the item, the flag and the field to use instead; so are
items holding several words; other flags pass. The managed flags are the
ones the builder sets. That vLLM really reads each example so is e2e/test_vllm_args.py's
part, with vLLM's own parser."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from testsupport.vllm_arg_cases import ACCEPTED, REFUSED, Refused

from inferops.api.spec import InferenceBackendSpec
from inferops.api.vllm_args import MANAGED, MANAGED_VLLM_FLAGS, read_flag
from inferops.api.vllm_options import OPTIONS
from inferops.builders import vllm
from inferops.validation import describe_errors
from tests.conftest import OWNER, make_spec


def spec_with(extra_args: list[str]) -> InferenceBackendSpec:
    return InferenceBackendSpec.model_validate(
        {"model": "llama3.2", "vllm": {"model": "m", "extraArgs": extra_args}}
    )


@pytest.mark.parametrize("case", REFUSED, ids=[" ".join(c.args) for c in REFUSED])
def test_refused_spellings_name_the_item_the_flag_and_the_fix(case: Refused) -> None:
    with pytest.raises(ValidationError) as caught:
        spec_with(case.args)
    message = describe_errors(caught.value)
    item = f'spec.vllm.extraArgs[{case.position}] "{case.args[case.position]}"'
    assert message.startswith(item), message
    assert case.words in message and case.fix in message, message
    assert message.count("spec.vllm.extraArgs[") == 1, message  # no other item blamed


@pytest.mark.parametrize("args", ACCEPTED, ids=[" ".join(a) for a in ACCEPTED])
def test_other_flags_are_accepted_and_passed_as_written(args: list[str]) -> None:
    spec = spec_with(args)
    assert vllm.args(spec)[-len(args) :] == args


def test_every_option_string_of_a_managed_flag_has_refused_rows() -> None:
    """A new alias in a regenerated table needs its rows (and is refused meanwhile)."""
    exact = {c.args[c.position].split("=", 1)[0] for c in REFUSED}
    assert set(MANAGED_VLLM_FLAGS) <= exact, set(MANAGED_VLLM_FLAGS) - exact
    refused_dests = {
        OPTIONS[flag.options[0]][0]
        for c in REFUSED
        if (flag := read_flag(c.args[c.position])) is not None and len(flag.options) == 1
    }
    assert refused_dests == set(MANAGED)


def test_the_managed_flags_are_the_ones_the_builder_sets() -> None:
    """Derived from the builder: every flag it passes, read through vLLM's table, is managed,
    and every managed flag but the download directory (the builder sets HF_HOME to the cache
    volume instead) is one it passes."""
    spec = make_spec(vllm={"model": "m", "maxModelLen": 4096})
    passed = {OPTIONS[a][0] for a in vllm.args(spec) if a.startswith("-")}
    assert passed == set(MANAGED) - {"download_dir"}
    container = vllm.deployment(spec, OWNER)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HF_HOME", "value": vllm.HF_HOME} in container["env"]


def test_a_spec_refused_for_several_items_names_each() -> None:
    with pytest.raises(ValidationError) as caught:
        spec_with(["--port=1", "--enforce-eager", "-tp", "2", "x"])
    message = describe_errors(caught.value)
    named = [i for i in range(5) if f"spec.vllm.extraArgs[{i}]" in message]
    # Values are not judged: "2" is -tp's; "x" is nobody's, which vLLM stops on by itself.
    assert named == [0, 2], message
