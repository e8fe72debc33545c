"""The release: `.github/workflows/release.yml` and the checks it runs (`images/release.py`),
every workflow's action pins and permissions, and the build and install commands that
README.md and docs/setup.md give while no release exists, run through the chart."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from e2e.localcluster import versions
from e2e.localcluster.build import HELM
from testsupport.helm import find_helm

pytestmark = [pytest.mark.helm]

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
CHART = REPO / "charts" / "inferops"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_release_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


release = _load(REPO / "images" / "release.py")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _workflow(name: str) -> dict[Any, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _render(chart: Path, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [find_helm(HELM), "template", "inferops", str(chart), "--namespace", "inferops", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _operator(rendered: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """The operator container's image and its environment's image settings."""
    (deployment,) = [d for d in rendered if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    return container["image"], {k: v for k, v in env.items() if k.endswith("_IMAGE")}


# ------------------------------------------------------------ images/release.py


def _tree(tmp_path: Path, project: str, chart: str, app: str) -> Path:
    (tmp_path / "charts" / "inferops").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "inferops"\nversion = "{project}"\n'
    )
    (tmp_path / "charts" / "inferops" / "Chart.yaml").write_text(
        f'apiVersion: v2\nname: inferops\nversion: {chart}\nappVersion: "{app}"\n'
    )
    return tmp_path


def test_a_tag_releases_the_version_written_in_the_tree(tmp_path: Path) -> None:
    assert release.check(f"v{VERSION}") == VERSION  # the repository as it is
    rc = "2.0.0-rc.1"
    assert release.check(f"v{rc}", _tree(tmp_path / "a", rc, rc, rc)) == rc
    with pytest.raises(release.ReleaseError) as refused:
        release.check("v1.1.0", _tree(tmp_path / "b", "1.1.0", "1.0.0", "1.1.0"))
    assert str(refused.value) == (
        "tag v1.1.0 releases 1.1.0, but charts/inferops/Chart.yaml version is 1.0.0: set them "
        "all to 1.1.0, commit, and tag that commit"
    )
    with pytest.raises(
        release.ReleaseError, match=re.escape("pyproject.toml project.version is 1.0.0")
    ):
        release.check("v1.1.0", _tree(tmp_path / "c", "1.0.0", "1.1.0", "1.1.0"))
    with pytest.raises(release.ReleaseError, match=re.escape("Chart.yaml appVersion is 1.0.0")):
        release.check("v1.1.0", _tree(tmp_path / "d", "1.1.0", "1.1.0", "1.0.0"))


@pytest.mark.parametrize("tag", ["1.2.3", "v1.2", "v1.2.3.4", "version-1", "v1.2.3 ", "main"])
def test_a_tag_that_is_not_a_version_is_refused(tag: str) -> None:
    with pytest.raises(release.ReleaseError, match=re.escape("use v<major>.<minor>.<patch>")):
        release.check(tag)


def test_versions_are_read_as_yaml_and_toml_read_them() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert release.written_versions() == {
        "pyproject.toml project.version": VERSION,
        "charts/inferops/Chart.yaml version": str(chart["version"]),
        "charts/inferops/Chart.yaml appVersion": str(chart["appVersion"]),
    }


def test_check_prints_what_the_workflow_reads(capsys: pytest.CaptureFixture[str]) -> None:
    assert release.main(["check", f"v{VERSION}", "--owner", "Some-Org"]) == 0
    assert capsys.readouterr().out == f"version={VERSION}\nregistry=ghcr.io/some-org\n"
    assert release.main(["check", "v0.0.0-never", "--owner", "x"]) == 1
    assert "set them all to 0.0.0-never" in capsys.readouterr().err


def test_the_published_chart_installs_the_released_operator_image(tmp_path: Path) -> None:
    chart = tmp_path / "inferops"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    values.write_text(release.chart_values(values.read_text(), "ghcr.io/some-org"))
    image, env = _operator(_render(chart))
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert image == f"ghcr.io/some-org/inferops:{app_version}"
    assert env["INFEROPS_ROUTER_IMAGE"] == image  # routers run the operator's image
    # Only the operator's repository moved; the comments around it stay.
    before, after = (
        (CHART / "values.yaml").read_text().splitlines(),
        values.read_text().splitlines(),
    )
    assert [(a, b) for a, b in zip(before, after, strict=True) if a != b] == [
        ("  repository: inferops/inferops", "  repository: ghcr.io/some-org/inferops")
    ]
    with pytest.raises(release.ReleaseError, match=re.escape("no `image.repository`")):
        release.chart_values("defaultImages:\n  vllm: x\n", "ghcr.io/x")


# ------------------------------------------------------------ the workflows


ACTION = re.compile(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+){0,2}|[0-9a-f]{40})")


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_every_workflow_pins_its_actions_and_grants_least_permissions(name: str) -> None:
    doc = _workflow(name)
    # Read-only by default; a job that writes says so itself, and only contents or packages.
    assert doc["permissions"] == {"contents": "read"}, name
    for job_name, job in doc["jobs"].items():
        granted = job.get("permissions", {})
        assert isinstance(granted, dict), f"{name} {job_name}: permissions must be a map"
        writes = {scope for scope, level in granted.items() if level == "write"}
        assert writes <= {"contents", "packages"}, f"{name} {job_name} writes {writes}"
        for step in job.get("steps", []):
            if "uses" in step:
                assert ACTION.fullmatch(step["uses"]), f"{name}: {step['uses']} is not pinned"


def test_the_release_workflow_publishes_each_image_chart_and_wheel_on_a_version_tag() -> None:
    doc = _workflow("release.yml")
    assert doc[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the `on` key as True
    jobs = doc["jobs"]
    assert "permissions" not in jobs["version"]
    assert jobs["images"]["permissions"] == {"contents": "read", "packages": "write"}
    assert jobs["chart"]["permissions"] == {"contents": "read", "packages": "write"}
    assert jobs["release"]["permissions"] == {"contents": "write"}
    # Nothing is published before what it points at: images, then the chart, then the release.
    assert set(jobs["chart"]["needs"]) == {"version", "images"}
    assert set(jobs["release"]["needs"]) == {"version", "images", "chart"}

    matrix = jobs["images"]["strategy"]["matrix"]["include"]
    assert {m["name"]: m["dockerfile"] for m in matrix} == release.IMAGES
    for image in matrix:
        assert (REPO / image["dockerfile"]).is_file() and (REPO / image["context"]).is_dir()

    def runs(job: str) -> str:
        return "\n".join(step.get("run", "") for step in jobs[job]["steps"])

    assert 'release.py check "$TAG"' in runs("version")
    assert jobs["version"]["steps"][1]["env"]["TAG"] == "${{ github.ref_name }}"
    assert "for platform in linux/amd64 linux/arm64; do" in runs("images")
    assert 'docker buildx build --platform "$PLATFORMS"' in runs("images")
    assert "--push" in runs("images")
    assert 'release.py chart-values "$REGISTRY"' in runs("chart")
    assert 'helm push "dist/inferops-${VERSION}.tgz" "oci://${REGISTRY}/charts"' in runs("chart")
    assert "python -m build --outdir dist" in runs("release")
    assert 'gh release create "$TAG" dist/*' in runs("release")
    assert doc["env"]["HELM_VERSION"] == versions.HELM_VERSION


# ------------------------------------------------------------ the documented commands


def _commands(path: Path) -> list[list[str]]:
    """The shell commands of a Markdown file's `sh` blocks, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _expand(word: str) -> str:
    return word.replace("$REGISTRY", "registry.test/you").replace("$VERSION", VERSION)


@pytest.mark.parametrize("doc", ["README.md", "docs/setup.md"])
def test_the_documented_builds_and_install_use_the_images_the_release_names(doc: str) -> None:
    """While no release exists, users build and install by hand: each documented build is of
    a Dockerfile the release builds, under the release's name for it, from its context; each
    documented install renders the chart with the operator image just pushed."""
    commands = _commands(REPO / doc)
    builds = [c for c in commands if c[:3] == ["docker", "buildx", "build"]]
    assert builds, f"{doc} documents no image build"
    matrix = _workflow("release.yml")["jobs"]["images"]["strategy"]["matrix"]["include"]
    contexts = {m["dockerfile"]: m["context"] for m in matrix}
    for build in builds:
        dockerfile, tag = build[build.index("-f") + 1], build[build.index("-t") + 1]
        name = tag.removeprefix("$REGISTRY/").removesuffix(":0.1.0").removesuffix(":$VERSION")
        assert release.IMAGES[name] == dockerfile, build
        assert build[-1] == contexts[dockerfile], build
        assert "--push" in build and "--platform" in build, build
    installs = [c for c in commands if c[:3] == ["helm", "install", "inferops"] and "--set" in c]
    assert installs, f"{doc} documents no install with the pushed image"
    for install in installs:
        args = [_expand(w) for w in install[4:] if w != "--create-namespace"]
        image, env = _operator(_render(CHART, *args))
        assert image == f"registry.test/you/inferops:{VERSION}", install
        assert env["INFEROPS_ROUTER_IMAGE"] == image


def test_the_documented_vllm_image_value_names_a_released_image() -> None:
    text = (REPO / "docs" / "setup.md").read_text()
    (value,) = re.findall(r"`--set (defaultImages\.vllm=\S+)`", text)
    _, env = _operator(_render(CHART, "--set", _expand(value.replace('"', ""))))
    assert env["INFEROPS_VLLM_IMAGE"] == f"registry.test/you/inferops-vllm:{VERSION}"
