"""`make lint`'s import contracts (pyproject's `[tool.importlinter]`, DESIGN.md convention 12)
hold for this checkout, and each breaks on an import it forbids: a copy of the code with one
such import added fails `lint-imports`, naming that contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREES = ("operator", "tests", "e2e", "testsupport")
# `lint-imports` in this interpreter, finding the copy's packages instead of this checkout's:
# `inferops` is a namespace package, so the editable install's directory would otherwise add
# the checkout's modules to the copy's.
RUN = """
import sys
from importlinter.cli import lint_imports_command
sys.path = [*sys.argv[1:3], *(p for p in sys.path if p != sys.argv[3])]
del sys.argv[1:4]
sys.exit(lint_imports_command())
"""
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = [c["name"] for c in CONFIG["contracts"]]


def contract(words: str) -> str:
    (name,) = [name for name in CONTRACTS if words in name]
    return name


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    paths = [str(root / "operator"), str(root), str(REPO / "operator")]
    return subprocess.run(
        [sys.executable, "-c", RUN, *paths, "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(REPO / "pyproject.toml", root)
    for tree in TREES:
        shutil.copytree(
            REPO / tree, root / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    return root


def test_every_contract_holds_for_the_code_as_it_is(copy: Path) -> None:
    result = lint_imports(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:
        assert f"{name} KEPT" in result.stdout


@pytest.mark.parametrize(
    ("words", "module", "forbidden"),
    [
        ("API models", "operator/inferops/api/base.py", "inferops.kube"),
        ("Builders are pure", "operator/inferops/builders/common.py", "inferops.kube"),
        ("Builders are pure", "operator/inferops/builders/router.py", "inferops.router.state"),
        ("operator-only", "operator/inferops/kube.py", "inferops.metrics"),
        ("operator-only", "operator/inferops/router/state.py", "inferops.reconcile"),
        ("operator-only", "operator/inferops/router/configmap.py", "inferops.status"),
        ("independent", "tests/test_cache.py", "e2e.harness"),
        ("independent", "e2e/test_faults.py", "tests.conftest"),
        ("Test support", "testsupport/process.py", "e2e.harness"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    copy: Path, words: str, module: str, forbidden: str
) -> None:
    source = copy / module
    original = source.read_text()
    source.write_text(f"{original}\nimport {forbidden}  # noqa: E402\n")
    try:
        result = lint_imports(copy)
    finally:
        source.write_text(original)
    assert result.returncode != 0
    assert f"{contract(words)} BROKEN" in result.stdout, result.stdout
