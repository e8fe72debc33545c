"""How vLLM's API server reads `spec.vllm.extraArgs`, and which items the spec refuses.

The operator puts its own flags first and the user's `extraArgs` after them, and vLLM keeps
the last value of a flag, so an item that vLLM reads as one of the operator's flags overrides
a spec field: a tensor parallel size the pod has no GPUs for, a served model name the router
does not know, a port the probes do not watch. Exact spellings are not enough to find them.
vLLM 0.32's parser (argparse under vLLM's `FlexibleArgumentParser`):

- turns `_` into `-` in a `--` option's name (`--max_model_len`), up to its first `.`;
- takes a unique prefix of a long option (`--max-model` is `--max-model-len`), and a prefix
  of several options is an error that stops vLLM;
- has short aliases (`-tp`), which take a prefix too (`-t`);
- reads `--flag=value` and `--flag value`; `--flag.key=value` sets key of the flag's JSON
  value, so `--served-model-name.a=b` sets the served model name too;
- takes an item with a space (`"--port 9000"`) as one positional argument: `vllm serve`
  stops on it ("unrecognized arguments"), the API server module takes it for the model.

`refusals` reads the items the same way, with vLLM's whole option table
(`inferops.api.vllm_options`, generated from the real parser), and returns one message per
refused item naming `spec.vllm.extraArgs[i]`, what vLLM reads and the fix. Each item is judged
on its own, exactly as the CEL rules of `extra_args_cel_rules` judge it at `kubectl apply`:
an item that vLLM could read as a managed flag is refused wherever it stands, and so is a
prefix that several flags share when one of them is managed (vLLM refuses it as ambiguous;
the user meant one). Options vLLM 0.32 does not know are left alone, as an image may carry a
newer vLLM, and so are values no flag takes, which need the item before them (vLLM stops on
them, as on a bad value).

`e2e/test_vllm_args.py` runs vLLM's own parser on every refused spelling and on accepted ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from inferops.api.base import JsonDict, cel
from inferops.api.vllm_options import OPTIONS, VLLM_VERSION

# argparse destinations of the flags the operator sets (`inferops.builders.vllm.args`, and
# the cache directory it sets through HF_HOME), with the fix to name. tests/test_vllm_args.py
# checks that the builder sets exactly these.
MANAGED: dict[str, str] = {
    "model": "set spec.vllm.model instead",
    "served_model_name": "set spec.model instead",
    "host": "remove it: vLLM listens on all pod addresses",
    "port": "remove it: vLLM serves on port 8000, which its Service and probes use",
    "tensor_parallel_size": "set spec.vllm.tensorParallelSize instead",
    "gpu_memory_utilization": "set spec.vllm.gpuMemoryUtilization instead",
    "max_model_len": "set spec.vllm.maxModelLen instead",
    "dtype": "set spec.vllm.dtype instead",
    "download_dir": "set spec.vllm.cache instead",
}

MANAGED_VLLM_FLAGS: dict[str, str] = {
    option: MANAGED[dest] for option, (dest, _) in OPTIONS.items() if dest in MANAGED
}
"""Every option string of a managed flag (long names and short aliases) -> the fix."""

FIELD = "spec.vllm.extraArgs"

# argparse reads these as values, not options (vLLM has no option that looks like a number).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
# Whitespace as the API server's rule (RE2's \s) sees it.
_SPACE = re.compile(r"[\t\n\f\r ]")


@dataclass(frozen=True)
class Flag:
    """What vLLM makes of an item that starts with `-`."""

    name: str
    """The option name argparse looks up, after vLLM's rewriting (`_` to `-`, `.key` cut)."""
    options: tuple[str, ...]
    """The option strings it may stand for: one when exact or a unique prefix, several when
    ambiguous, none when vLLM 0.32 does not know it."""


def option_name(item: str) -> str:
    """The option name of an item starting with `-`, as vLLM's pre-processing leaves it: up
    to `=`, and to the first `.` (`--flag.key=value` sets `key` in the flag's JSON value)."""
    name = item.split("=", 1)[0].split(".", 1)[0]
    if item.startswith("--"):
        name = "--" + name[2:].replace("_", "-")
    return name


def candidates(name: str) -> tuple[str, ...]:
    """The option strings argparse may read `name` as: itself, or the options it is a prefix
    of (long options; for a short one also the option its first two characters make, with
    the rest as value). Python 3.11's argparse does not split a short option at `=` before
    looking for a prefix, later versions do: both are covered, as a refusal is the safe side.
    """
    if name in OPTIONS:
        return (name,)
    found = [option for option in OPTIONS if option.startswith(name)]
    if not name.startswith("--") and name[:2] in OPTIONS:
        found.append(name[:2])
    return tuple(sorted(set(found)))


def read_flag(item: str) -> Flag | None:
    """None when vLLM's parser takes the item as a positional argument (or a value)."""
    if not item.startswith("-") or item in ("-", "--") or _NEGATIVE_NUMBER.match(item):
        return None
    if item.startswith("-O") and not item.startswith("--"):
        # vLLM rewrites -O3 and -O=3 to `--optimization-level 3`, and `-O 3` likewise.
        return Flag("--optimization-level", ("--optimization-level",))
    name = option_name(item)
    if _SPACE.search(name) or name in ("-", "--"):
        # argparse takes an item with a space for a positional argument; `--=x` names no
        # option (the API server's rule leaves it alone too).
        return None
    return Flag(name, candidates(name))


def _managed_problem(item: str, flag: Flag) -> str | None:
    managed = [o for o in flag.options if OPTIONS[o][0] in MANAGED]
    if not managed:
        return None
    if len(flag.options) == 1:
        option = managed[0]
        fix = MANAGED[OPTIONS[option][0]]
        if item.split("=", 1)[0] == option:
            return f"{option} is managed by the operator; {fix}"
        return f"vLLM reads it as {option}, which is managed by the operator; {fix}"
    listed = ", ".join(flag.options[:6]) + (", ..." if len(flag.options) > 6 else "")
    return (
        f"{flag.name} is a prefix of several vLLM flags ({listed}), which vLLM refuses as "
        f"ambiguous; {managed[0]} among them is managed by the operator: spell out the flag "
        "you mean"
    )


def _several_words(where: str, item: str) -> str:
    key, eq, value = item.partition("=")
    words = key.split()
    fix = ", ".join(f'"{w}"' for w in [*words, *([value] if eq and value else [])])
    message = (
        f"{where}: holds several words in one item; vLLM takes each item as one argument, "
        f"so this one is no flag but a stray positional argument, which stops `vllm serve`: "
        f"write one item per word, [{fix}]"
    )
    head = read_flag(words[0]) if words else None
    if head is not None and (problem := _managed_problem(words[0], head)):
        message += f"; and {problem}"
    return message


def refusals(items: Sequence[str], field: str = FIELD) -> list[str]:
    """One message per item vLLM could read as a flag the operator manages, or holding
    several words; [] when all are fine. Each item is judged on its own, as the API server's
    rules judge it, so the two agree. `field` names the list in the messages."""
    problems: list[str] = []
    for i, item in enumerate(items):
        where = f'{field}[{i}] "{item}"'
        if item.startswith("-") and _SPACE.search(item.split("=", 1)[0]):
            problems.append(_several_words(where, item))
        elif (flag := read_flag(item)) is not None and (problem := _managed_problem(item, flag)):
            problems.append(f"{where}: {problem}")
    return problems


# The option name of an item (`self`), as `option_name` finds it, in CEL.
_CEL_NAME = (
    "(self.startsWith('--') ? self.split('=')[0].split('.')[0].replace('_', '-') "
    ": self.split('=')[0].split('.')[0])"
)


def extra_args_cel_rules() -> list[JsonDict]:
    """The same check for the API server, on each item of `extraArgs` (so its messages name
    `spec.vllm.extraArgs[i]`): one rule per managed flag, refusing every spelling of it
    (exact, `_` for `-`, prefix, short alias, `=value`, `.key`), and one for items with a
    space. They refuse exactly what `refusals` refuses. (Rules on the list with a message
    naming the index cost more than the API server allows.)"""
    unmanaged_prefixes = [
        option
        for option, (dest, _) in OPTIONS.items()
        if dest not in MANAGED and any(m.startswith(option) for m in MANAGED_VLLM_FLAGS)
    ]
    short = [m for m in MANAGED_VLLM_FLAGS if len(m) == 2]
    if unmanaged_prefixes or short:
        # Neither happens in vLLM 0.32; a table where it does needs rules that know it.
        raise ValueError(
            f"the CEL rules do not cover options that are prefixes of managed ones "
            f"({unmanaged_prefixes}) or managed two-character options ({short})"
        )
    rules = []
    for dest, fix in MANAGED.items():
        options = sorted(o for o, (d, _) in OPTIONS.items() if d == dest)
        name = "--" + dest.replace("_", "-")
        options.sort(key=lambda o: o != name)  # the flag's own name first, for the message
        listed = "[" + ", ".join(f"'{o}'" for o in options) + "]"
        rules.append(
            cel(
                f"!(self.startsWith('-') && size({_CEL_NAME}) > 1 && {_CEL_NAME} != '--' && "
                f"{listed}.exists(m, m.startsWith({_CEL_NAME})))",
                f"vLLM reads it as {options[0]}, which is managed by the operator; {fix}",
            )
        )
    rules.append(
        cel(
            "!(self.startsWith('-') && self.split('=')[0].matches('\\\\s'))",
            "holds several words; vLLM takes each item as one argument: write one item per "
            'word, e.g. ["--max-num-seqs", "64"]',
        )
    )
    return rules


def settings(items: Sequence[str]) -> dict[str, str | bool]:
    """What vLLM's parser makes of `items`: argparse destination -> the last value given
    (True/False for a switch and its `--no-` form), for the options read unambiguously. The
    operator reads from it what the router must know of vLLM (`inferops.builders.router`):
    whether it runs the pooling runner, whether it has a tool-call parser."""
    out: dict[str, str | bool] = {}
    index = 0
    while index < len(items):
        item = items[index]
        index += 1
        flag = read_flag(item)
        if flag is None or len(flag.options) != 1:
            continue
        option = flag.options[0]
        dest, nargs = OPTIONS[option]
        if nargs == "0":
            out[dest] = not option.startswith("--no-")
        elif "=" in item:
            out[dest] = item.split("=", 1)[1]
        elif index < len(items):
            out[dest] = items[index]
            index += 1
    return out


POOLING_RUNNERS = ("pooling",)
POOLING_CONVERSIONS = ("embed",)


def generation_runner(items: Sequence[str]) -> str | None:
    """What in `items` would start vLLM as something other than an embedding model's pooling
    runner (`--runner generate`, `--convert classify`, ...), in words; None when nothing
    does."""
    args = settings(items)
    runner, convert = args.get("runner"), args.get("convert")
    if runner is not None and runner not in POOLING_RUNNERS:
        return f"--runner {runner} starts vLLM's {runner} runner, which serves no embeddings"
    if convert is not None and convert not in (*POOLING_CONVERSIONS, "auto", "none"):
        return f"--convert {convert} makes the model a {convert} model, not an embedding model"
    return None


__all__ = [
    "FIELD",
    "MANAGED",
    "MANAGED_VLLM_FLAGS",
    "VLLM_VERSION",
    "extra_args_cel_rules",
    "generation_runner",
    "read_flag",
    "refusals",
    "settings",
]
