"""The command line of a file generated from code (the CRD, the dashboard): write it, or
with `--check` fail when the committed file differs from a fresh generation."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(
    argv: list[str] | None,
    module: str,
    description: str | None,
    path: Path,
    render: Callable[[], str],
) -> int:
    """`python -m module`: `render()` written to `path` (or `--output`); with `--check`, 1
    when the file is stale."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--output", type=Path, default=path)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is stale: run `python -m {module}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    return 0


__all__ = ["main"]
