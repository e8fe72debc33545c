"""The container images: the vLLM entrypoint's environment mapping, its refusals and its
exec, the health check script, the Dockerfiles' pins and runtime rules, and the linters that
`make lint` runs on them really catching mistakes.

The entrypoint is exercised for real against vLLM's CPU build in e2e/test_vllm_image.py; here
a stand-in ``vllm`` package records what it was started with.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from e2e.engines import vllm_cpu
from e2e.localcluster.build import HELM
from testsupport.helm import find_helm
from testsupport.process import free_port

pytestmark = [pytest.mark.helm]

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
VLLM_DIR = IMAGES / "vllm"
ENTRYPOINT = VLLM_DIR / "entrypoint.py"
HEALTHCHECK = VLLM_DIR / "healthcheck.py"
DOCKERFILES = {
    "inferops": IMAGES / "inferops" / "Dockerfile",
    "vllm": VLLM_DIR / "Dockerfile",
    "vllm-cpu": VLLM_DIR / "Dockerfile.cpu",
}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_image_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ep = _load(ENTRYPOINT)


# --------------------------------------------------------------- env -> argv (pure)


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        pytest.param({}, [], "--port 8000", id="nothing set: only the default port"),
        pytest.param(
            {
                "VLLM_MODEL": "meta-llama/Llama-3.2-3B-Instruct",
                "VLLM_SERVED_MODEL_NAME": "llama3.2",
                "VLLM_TENSOR_PARALLEL_SIZE": "2",
                "VLLM_GPU_MEMORY_UTILIZATION": "0.85",
                "VLLM_MAX_MODEL_LEN": "8192",
                "VLLM_DTYPE": "bfloat16",
                "VLLM_HOST": "0.0.0.0",
                "VLLM_API_PORT": "9000",
                "VLLM_ENFORCE_EAGER": "true",
            },
            [],
            "--model meta-llama/Llama-3.2-3B-Instruct --served-model-name llama3.2"
            " --tensor-parallel-size 2 --gpu-memory-utilization 0.85 --max-model-len 8192"
            " --dtype bfloat16 --host 0.0.0.0 --port 9000 --enforce-eager",
            id="every variable, in a fixed order",
        ),
        pytest.param(
            {"VLLM_MAX_MODEL_LEN": "4096", "VLLM_EXTRA_ARGS": "--chat-template '/t/a b.jinja'"},
            ["--max-model-len", "8192", "--seed", "1"],
            "--max-model-len 4096 --port 8000 --chat-template '/t/a b.jinja'"
            " --max-model-len 8192 --seed 1",
            id="env, then shell-split VLLM_EXTRA_ARGS, then arguments (last one wins in vLLM)",
        ),
        pytest.param(
            {"VLLM_MODEL": "", "VLLM_TENSOR_PARALLEL_SIZE": "  ", "VLLM_API_PORT": ""},
            [],
            "--port 8000",
            id="empty values count as unset",
        ),
        pytest.param(
            {"VLLM_TENSOR_PARALLEL_SIZE": " 4 ", "VLLM_ENFORCE_EAGER": "No"},
            [],
            "--tensor-parallel-size 4 --port 8000",
            id="whitespace trimmed; a false switch adds no flag",
        ),
        pytest.param(
            {"VLLM_GPU_MEMORY_UTILIZATION": "1", "VLLM_ENFORCE_EAGER": "1"},
            ["--model", "/models/x"],
            "--gpu-memory-utilization 1 --port 8000 --enforce-eager --model /models/x",
            id="utilisation 1 is allowed; an argument without a port gets the default one",
        ),
        pytest.param(
            {},
            ["--model", "/m", "--host", "0.0.0.0", "--port", "8000"],
            "--model /m --host 0.0.0.0 --port 8000",
            id="arguments only, as the operator passes them: no second --port",
        ),
        pytest.param(
            {"VLLM_EXTRA_ARGS": "--port=9000"},
            [],
            "--port=9000",
            id="a port in VLLM_EXTRA_ARGS replaces the default one",
        ),
        pytest.param(
            {"VLLM_API_PORT": "9000"},
            ["--port", "9001"],
            "--port 9000 --port 9001",
            id="a variable and an argument: both passed, the argument wins in vLLM",
        ),
    ],
)
def test_build_argv(env: dict[str, str], args: list[str], expected: str) -> None:
    assert ep.build_argv(env, args) == shlex.split(expected)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("VLLM_TENSOR_PARALLEL_SIZE", "two"),
        ("VLLM_TENSOR_PARALLEL_SIZE", "1.5"),
        ("VLLM_TENSOR_PARALLEL_SIZE", "0"),
        ("VLLM_TENSOR_PARALLEL_SIZE", "-2"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "0"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "1.01"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "-0.5"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "90%"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "nan"),
        ("VLLM_GPU_MEMORY_UTILIZATION", "inf"),
        ("VLLM_MAX_MODEL_LEN", "8k"),
        ("VLLM_MAX_MODEL_LEN", "0"),
        ("VLLM_DTYPE", "fp8"),
        ("VLLM_API_PORT", "0"),
        ("VLLM_API_PORT", "65536"),
        ("VLLM_API_PORT", "tcp://10.0.0.1:8000"),
        ("VLLM_ENFORCE_EAGER", "maybe"),
        ("VLLM_EXTRA_ARGS", "--chat-template 'unclosed"),
    ],
)
def test_malformed_values_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ep.ConfigError, match=variable) as info:
        ep.build_argv({variable: value})
    assert repr(value) in str(info.value)


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (VLLM_DIR / "README.md").read_text()
    for name in sorted(ep.CONSUMED):
        assert f"`{name}`" in readme, name


def test_child_environment_drops_consumed_variables_and_service_links() -> None:
    env, notes = ep.child_environment(
        {
            "VLLM_MODEL": "m",
            "VLLM_EXTRA_ARGS": "--x",
            "VLLM_API_PORT": "8000",
            "VLLM_PORT": "tcp://10.96.0.12:8000",
            "VLLM_CPU_KVCACHE_SPACE": "4",
            "HOME": "/tmp",
        }
    )
    assert env == {"VLLM_CPU_KVCACHE_SPACE": "4", "HOME": "/tmp"}
    assert len(notes) == 1 and "service link" in notes[0]
    # A plain VLLM_PORT is vLLM's own internal-port setting: left alone.
    assert ep.child_environment({"VLLM_PORT": "29500"})[0] == {"VLLM_PORT": "29500"}


def test_redact_hides_the_api_key() -> None:
    assert ep.redact(["--api-key", "s3cret", "--api-key=s3cret", "--port", "1"]) == [
        "--api-key",
        "***",
        "--api-key=***",
        "--port",
        "1",
    ]


# ------------------------------------------------------- the script, run as a process

FAKE_API_SERVER = """
import json, os, sys
with open(os.environ["FAKE_VLLM_OUT"], "w") as fh:
    json.dump({"pid": os.getpid(), "argv": sys.argv[1:], "env": dict(os.environ)}, fh)
"""


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    """A stand-in ``vllm.entrypoints.openai.api_server`` that records how it was started."""
    package = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for directory in (package, package.parent, package.parent.parent):
        (directory / "__init__.py").write_text("")
    (package / "api_server.py").write_text(FAKE_API_SERVER)
    return tmp_path / "fake"


def _run_entrypoint(
    fake_vllm: Path, out: Path, env: dict[str, str], *args: str
) -> subprocess.Popen[str]:
    """The entrypoint with `env` and `args`, starting `fake_vllm`, which records into `out`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    fake = {"PYTHONPATH": str(fake_vllm), "FAKE_VLLM_OUT": str(out)}
    return subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), *args],
        env={**base, **fake, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_entrypoint_execs_the_api_server_module(fake_vllm: Path, tmp_path: Path) -> None:
    out = tmp_path / "started.json"
    process = _run_entrypoint(
        fake_vllm,
        out,
        {
            "VLLM_MODEL": "/models/tiny",
            "VLLM_SERVED_MODEL_NAME": "tiny",
            "VLLM_EXTRA_ARGS": "--api-key hidden",
            "VLLM_PORT": "tcp://10.96.0.12:8000",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        },
        "--max-num-seqs",
        "2",
    )
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    started: dict[str, Any] = json.loads(out.read_text())
    assert started["pid"] == process.pid  # exec: the server replaced the entrypoint
    assert started["argv"] == [
        "--model",
        "/models/tiny",
        "--served-model-name",
        "tiny",
        "--port",
        "8000",
        "--api-key",
        "hidden",
        "--max-num-seqs",
        "2",
    ]
    env = started["env"]
    assert "VLLM_MODEL" not in env and "VLLM_EXTRA_ARGS" not in env
    assert "VLLM_PORT" not in env  # the service link, dropped with a note
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "service link" in stderr
    assert "-m vllm.entrypoints.openai.api_server" in stderr
    assert "hidden" not in stderr  # the logged command hides the API key


def test_entrypoint_refuses_a_malformed_value_with_exit_2(fake_vllm: Path, tmp_path: Path) -> None:
    out = tmp_path / "started.json"
    process = _run_entrypoint(fake_vllm, out, {"VLLM_GPU_MEMORY_UTILIZATION": "1.5"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip().splitlines() == [
        "inferops-vllm-entrypoint: VLLM_GPU_MEMORY_UTILIZATION must be a number in (0, 1], "
        "got '1.5'"
    ]
    assert not out.exists()  # vLLM was never started


# ------------------------------------------------------------------- health check


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _healthcheck(port: int | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "VLLM_API_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck(
    health_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = health_server.server_address[1]
    assert _healthcheck(port).returncode == 0
    monkeypatch.setattr(_Health, "status", 503)
    unhealthy = _healthcheck(port)
    assert unhealthy.returncode == 1 and "/health" in unhealthy.stderr
    assert _healthcheck(free_port()).returncode == 1
    assert _healthcheck("http").returncode == 1


# ---------------------------------------------------------------- the Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(path):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _base_images(path: Path) -> list[str]:
    """The FROM images, with ``${ARG}`` replaced by the ARG's default; stage names skipped."""
    defaults = {}
    stage_names: set[str] = set()
    images = []
    for keyword, rest in _instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
        if keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults[m.group(1)], words[0])
            if image not in stage_names:
                images.append(image)
            if len(words) == 3 and words[1].upper() == "AS":
                stage_names.add(words[2])
    return images


EXACT_TAG = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+(-[\w.-]+)?(@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_base_images_are_pinned_to_exact_releases(name: str) -> None:
    images = _base_images(DOCKERFILES[name])
    assert images
    for image in images:
        assert EXACT_TAG.match(image), f"{name}: {image} is not pinned to an exact release"


def test_vllm_images_match_the_tested_vllm_version() -> None:
    assert _base_images(DOCKERFILES["vllm"]) == [f"vllm/vllm-openai:v{vllm_cpu.VLLM_CPU_VERSION}"]
    args = dict(
        rest.partition("=")[::2]
        for kw, rest in _instructions(DOCKERFILES["vllm-cpu"])
        if kw == "ARG"
    )
    assert args["VLLM_CPU_VERSION"] == vllm_cpu.VLLM_CPU_VERSION
    assert args["TORCH_VERSION"] == vllm_cpu.TORCH_VERSION
    assert vllm_cpu.REQUIREMENTS_SCRIPT == VLLM_DIR / "requirements.py"


@pytest.mark.parametrize("name", ["vllm", "vllm-cpu"])
def test_vllm_images_start_through_the_entrypoint_with_a_health_check(name: str) -> None:
    instructions = _instructions(DOCKERFILES[name])
    (entrypoint,) = [json.loads(rest) for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert entrypoint[0] in ("python", "python3")
    assert entrypoint[1:] == ["/opt/inferops/entrypoint.py"]
    (health,) = [rest for kw, rest in instructions if kw == "HEALTHCHECK"]
    assert health.endswith(f'CMD ["{entrypoint[0]}", "/opt/inferops/healthcheck.py"]')
    # One port: the API, /health and /metrics (vLLM has no separate metrics port).
    assert [rest for kw, rest in instructions if kw == "EXPOSE"] == ["8000"]
    for kw, rest in instructions:
        if kw == "COPY" and "--from" not in rest:
            sources = [w for w in rest.split() if not w.startswith("--")][:-1]
            assert all((VLLM_DIR / s).is_file() for s in sources), rest


def test_inferops_image_is_multi_stage_slim_and_non_root() -> None:
    build, final = _stages(DOCKERFILES["inferops"])
    assert build[0][1].endswith("AS build")
    assert any(kw == "RUN" and "pip wheel" in rest for kw, rest in build)
    run = " ".join(rest for kw, rest in final if kw == "RUN")
    assert "--mount=type=bind,from=build" in run  # the wheels never become a layer
    assert "--no-index" in run
    assert "pip uninstall --yes setuptools wheel pip" in run
    for tool in ("apt-get", "gcc", "build-essential", "make "):
        assert tool not in run, tool
    env = " ".join(rest for kw, rest in final if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    users = [rest for kw, rest in final if kw == "USER"]
    assert users == ["65532:65532"]
    assert [rest for kw, rest in final if kw == "ENTRYPOINT"] == ['["inferops-operator"]']
    # The router's documented command override names a module that exists.
    assert (REPO / "operator" / "inferops" / "router" / "__main__.py").is_file()
    assert '"python", "-m", "inferops.router"' in DOCKERFILES["inferops"].read_text()


def test_workflows_and_makefile_build_existing_dockerfiles() -> None:
    texts = [p.read_text() for p in sorted((REPO / ".github" / "workflows").glob("*.yml"))]
    texts.append((REPO / "Makefile").read_text())
    referenced = set()
    for text in texts:
        referenced |= set(re.findall(r"images/[\w./-]*Dockerfile[\w.]*", text))
    assert referenced, "no Dockerfile referenced by the workflows or the Makefile"
    for path in referenced:
        assert (REPO / path).is_file(), path
    assert {str(p.relative_to(REPO)) for p in DOCKERFILES.values()} <= referenced


# ------------------------------------------------- the linters that `make lint` runs


def _tool(name: str) -> str:
    """The pinned linter's binary, installed on first use (`make lint` already did)."""
    result = subprocess.run(
        [sys.executable, str(IMAGES / "tools.py"), "path", name],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return result.stdout.strip()


BAD_DOCKERFILE = """\
FROM python:latest
RUN cd /src && apt-get update && apt-get install curl
RUN pip install requests
ADD app.py /app.py
CMD python /app.py
"""


def test_hadolint_catches_a_bad_dockerfile_and_passes_ours(tmp_path: Path) -> None:
    hadolint = _tool("hadolint")
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    for rule in ("DL3007", "DL3003", "DL3008", "DL3013", "DL3020", "DL3025"):
        assert rule in result.stdout, rule
    ours = subprocess.run(
        [hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, check=False
    )
    assert ours.returncode == 0, ours.stdout


BAD_WORKFLOW = """\
on: push
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          no-such-input: true
      - run: echo ${{ github.event.pull_request.title }}
      - run: echo "${{ matrix.missing }}"
      - run: cat $1/README.md
"""


def test_actionlint_catches_a_bad_workflow(tmp_path: Path) -> None:
    actionlint = _tool("actionlint")
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    result = subprocess.run(
        [actionlint, "-no-color", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert "no-such-input" in result.stdout  # an unknown input of a known action
    assert "potentially untrusted" in result.stdout  # script injection
    assert "matrix" in result.stdout
    assert "SC2086" in result.stdout  # shellcheck, run by actionlint on run: blocks


def test_the_kind_workflow_values_fit_the_chart() -> None:
    """The workflow installs the chart with .github/kind/values.yaml: the schema rejects
    unknown keys, so this fails when a value the workflow sets is renamed in the chart."""
    values = REPO / ".github" / "kind" / "values.yaml"
    assert str(values.relative_to(REPO)) in (REPO / ".github/workflows/e2e-kind.yml").read_text()
    result = subprocess.run(
        [
            find_helm(HELM),
            "template",
            "inferops",
            str(REPO / "charts" / "inferops"),
            "--namespace",
            "inferops-system",
            "--values",
            str(values),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (deployment,) = [
        d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    (operator,) = pod["containers"]
    assert operator["image"] == "inferops/inferops:ci"
    env = {e["name"]: e.get("value") for e in operator.get("env", [])}
    images = {v for k, v in env.items() if k.endswith("_IMAGE")}
    assert {"inferops/vllm-cpu:ci", "inferops/inferops:ci"} <= images
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "inferops-control-plane"}
