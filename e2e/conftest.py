"""Fixtures of the e2e tier: a real API server, the CRD, the operator, a namespace per test.

The cluster is the one KUBECONFIG names when it is set (kind in CI, any cluster), otherwise
the local cluster, started here (and stopped at the end if this session started it). Nothing
is skipped: if the cluster cannot start, every test errors with the reason. (The one test that
restarts the API server needs the local cluster; with KUBECONFIG set it reports a skip.)
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from testsupport import markers

from e2e.dataplane import MODEL, DataPlane
from e2e.engines.ollama_server import OllamaServer
from e2e.harness import REPO, Kubectl, OperatorProcess, free_port, install_crd

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test of this tier `e2e` (a `pytestmark` in a conftest marks nothing), so
    `-m e2e` and `-m "not e2e"` select by tier; refuses a test using a fixture that starts
    something its module's markers do not name (testsupport/markers.py), so that selecting
    by marker never starts what was left out."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            lacking = markers.missing(item.fixturenames, (m.name for m in item.iter_markers()))
            if lacking:
                raise pytest.UsageError(
                    f"{item.nodeid} starts what the markers {lacking} say: add them to "
                    f"pytestmark in {item.path.name}"
                )


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    external = os.environ.get("KUBECONFIG")
    if external:
        binary = shutil.which("kubectl")
        assert binary, "KUBECONFIG is set but no kubectl is on PATH"
        yield Kubectl(binary=binary, kubeconfig=Path(external), env=dict(os.environ))
        return
    from e2e.localcluster import Cluster

    cluster = Cluster.default()
    started = cluster.up()
    client = Kubectl(
        binary=str(cluster.kubectl_path), kubeconfig=cluster.kubeconfig, env=cluster.env
    )
    # No storage provisioner runs on the local cluster: volumes to bind claims to.
    client.run("apply", "-f", str(REPO / "e2e" / "manifests" / "local-volumes.yaml"))
    yield client
    if started:
        cluster.down()


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> str:
    return install_crd(kubectl)


@pytest.fixture(scope="session")
def operator(
    kubectl: Kubectl, crd: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(kubectl, log, metrics_port=free_port())
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"e2e-{request.node.name[:30].lower().replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On failure, attach what a person would look at: events, objects, operator log."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        kubectl_ = funcargs.get("kubectl")
        ns = funcargs.get("namespace")
        if isinstance(kubectl_, Kubectl) and isinstance(ns, str):
            report.sections.append(("cluster state", kubectl_.diagnostics(ns)))
        op = funcargs.get("operator")
        if isinstance(op, OperatorProcess):
            report.sections.append(("operator log (tail)", op.log_tail()))
    return report


@pytest.fixture(scope="module")
def ollama_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    """Real Ollama serving the tiny model as `MODEL`, for the tests of one module."""
    log = tmp_path_factory.mktemp("ollama") / "ollama.log"
    with OllamaServer(model_names=[MODEL], log_path=log) as server:
        server.start()
        yield server


@pytest.fixture(scope="module")
def plane(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    """Real vLLM (CPU build), real Ollama, Prometheus and a router process, for the
    tests of one module (the migration's and the data plane's faults)."""
    data_plane = DataPlane(tmp_path_factory.mktemp("dataplane"), kubectl)
    data_plane.start()
    yield data_plane
    data_plane.stop()


@pytest.fixture(scope="module")
def migrator(
    kubectl: Kubectl,
    operator: OperatorProcess,
    plane: DataPlane,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator told where the local router and Prometheus are. The session's operator
    pauses meanwhile: two operators must not drive the same resources."""
    operator.stop()
    mine = OperatorProcess(
        kubectl,
        tmp_path_factory.mktemp("migrator") / "operator.log",
        free_port(),
        extra_args=plane.operator_args(),
    )
    mine.start()
    yield mine
    mine.stop()
    operator.start()
