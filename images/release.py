"""The release workflow's checks and names (.github/workflows/release.yml), kept here so that
unit tests cover them.

    python images/release.py check vX.Y.Z --owner OWNER   # prints version=... and registry=...
    python images/release.py chart-values REGISTRY          # points the chart at the release

`check` refuses a tag that is not `v` + the version written in pyproject.toml (the wheel's)
and in Chart.yaml (`version`, and `appVersion`, the operator image's tag by default): one
number for the wheel, the chart and the images the chart points at, taken from the tree that
is tagged, so a release never mixes versions. `chart-values` rewrites the chart's
`image.repository` to the registry the release pushed the operator image to, so that the
published chart installs the published image without `--set`.

Standard library only: the workflow runs it with the runner's Python, before any install.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
CHART = REPO / "charts" / "inferops"

# What a release publishes under its registry (ghcr.io/<owner> by default). The chart goes to
# `<registry>/charts/inferops`: beside the operator image `<registry>/inferops`, not on it.
IMAGES = {
    "inferops": "images/inferops/Dockerfile",  # the operator and the router
    "inferops-vllm": "images/vllm/Dockerfile",  # vLLM for NVIDIA GPUs
    "inferops-vllm-cpu": "images/vllm/Dockerfile.cpu",  # vLLM's CPU build
}
CHART_REPOSITORY = "charts"

TAG = re.compile(r"v(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)")
# The chart's own repository line (two-space indent, under `image:`); defaultImages has none.
_IMAGE_REPOSITORY = re.compile(r"^(image:\n(?:  #.*\n)*  repository: )(\S+)$", re.MULTILINE)


class ReleaseError(Exception):
    """A tag or a tree that cannot be released; the message says what to change."""


def version_of(tag: str) -> str:
    """`v1.2.3` -> `1.2.3` (a pre-release suffix such as `-rc.1` is kept)."""
    match = TAG.fullmatch(tag)
    if match is None:
        raise ReleaseError(f"tag {tag!r} is not a release version: use v<major>.<minor>.<patch>")
    return match[1]


def written_versions(repo: Path = REPO) -> dict[str, str]:
    """Every place the release's version is written, by where."""
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    chart = (repo / "charts" / "inferops" / "Chart.yaml").read_text()
    found = {"pyproject.toml project.version": str(project)}
    for key in ("version", "appVersion"):
        match = re.search(rf"^{key}:\s*\"?([^\"\s]+)\"?\s*$", chart, re.MULTILINE)
        found[f"charts/inferops/Chart.yaml {key}"] = match[1] if match else "(missing)"
    return found


def check(tag: str, repo: Path = REPO) -> str:
    """The version a tag releases, once every written version agrees with it."""
    version = version_of(tag)
    written = written_versions(repo)
    wrong = [f"{where} is {value}" for where, value in written.items() if value != version]
    if wrong:
        raise ReleaseError(
            f"tag {tag} releases {version}, but {'; '.join(wrong)}: set them all to {version}, "
            "commit, and tag that commit"
        )
    return version


def registry_of(owner: str, host: str = "ghcr.io") -> str:
    """`ghcr.io/<owner>`, lower-cased: image names may not have capitals, owners may."""
    return f"{host}/{owner.lower()}"


def chart_values(values: str, registry: str) -> str:
    """The chart's values.yaml with `image.repository` set to the released operator image."""
    rewritten, count = _IMAGE_REPOSITORY.subn(rf"\g<1>{registry}/inferops", values)
    if count != 1:
        raise ReleaseError("charts/inferops/values.yaml: no `image.repository` line found")
    return rewritten


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="check a tag, print version= and registry=")
    check_cmd.add_argument("tag")
    check_cmd.add_argument("--owner", required=True, help="the registry's owner (lower-cased)")
    values_cmd = commands.add_parser("chart-values", help="point the chart at the release")
    values_cmd.add_argument("registry")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            print(f"version={check(args.tag)}")
            print(f"registry={registry_of(args.owner)}")
        else:
            path = CHART / "values.yaml"
            path.write_text(chart_values(path.read_text(), args.registry))
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
