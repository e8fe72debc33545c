"""The vLLM images' entrypoint and health check, run for real against vLLM's CPU build.

No container engine is needed: the entrypoint script (images/vllm/entrypoint.py) is started
with the cached vLLM env's interpreter, as the images start it with theirs, configured only
through its documented environment variables (no command-line arguments), and serves the
generated tiny model. The checks are the image's contract: ``exec`` (the server is the
process that was started, so signals reach it), the health check script, ``/health``,
``/v1/models`` with the served name and context length from the environment, a real tiny
completion, and ``/metrics`` on the same port. No cluster is used.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from testsupport.markers import needs
from testsupport.process import ManagedProcess, free_port

from e2e.engines.tiny_model import ensure_tiny_model
from e2e.engines.vllm_cpu import ensure_vllm_env, env_python
from e2e.engines.vllm_server import DEFAULT_START_TIMEOUT, VLLM_METRICS, VLLMServer
from e2e.harness import REPO, wait_for

pytestmark = needs("vllm")

IMAGE_DIR = REPO / "images" / "vllm"
SERVED_NAME = "tiny-from-env"
MAX_MODEL_LEN = 192  # neither vLLM's default (the model's 512) nor VLLMServer's (256)


@dataclass
class ImageServer:
    process: ManagedProcess
    python: Path
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    env_dir = ensure_vllm_env()
    python = env_python(env_dir)
    model = ensure_tiny_model(python)
    port = free_port()
    # The same runtime environment as the engine tests' vLLM (offline, small KV cache,
    # caches in the project cache), then the image's documented variables only.
    env = VLLMServer._environment(threads=1, kv_cache_gib=1, extra={})
    # vLLM leaves its rendezvous files in $TMPDIR: a private one, removed at the end.
    tmpdir = Path(tempfile.mkdtemp(prefix=f"inferops-vllm-image-{port}-"))
    env.update(
        {
            "TMPDIR": str(tmpdir),
            "VLLM_MODEL": str(model),
            "VLLM_SERVED_MODEL_NAME": SERVED_NAME,
            "VLLM_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
            # Not the model's bfloat16: on a CPU that reports AMX, vLLM 0.32 runs bfloat16
            # attention on its AMX kernel, which dies with SIGILL where AMX is listed but not
            # usable (seen on a project VM). float32 takes the AVX-512/AVX2 kernels.
            "VLLM_DTYPE": "float32",
            "VLLM_HOST": "127.0.0.1",
            "VLLM_API_PORT": str(port),
            "VLLM_ENFORCE_EAGER": "true",  # skips torch.compile: a faster start
            "VLLM_EXTRA_ARGS": "--max-num-seqs 4 --seed 7",
        }
    )
    process = ManagedProcess(
        f"vLLM image entrypoint on port {port}",
        [str(python), str(IMAGE_DIR / "entrypoint.py")],
        env=env,
        log_path=tmp_path_factory.mktemp("vllm-image") / "vllm.log",
        health_url=f"http://127.0.0.1:{port}/health",
        clean_shm=True,  # vLLM: a killed one leaves its shared memory behind
    )
    process.start(timeout=DEFAULT_START_TIMEOUT)
    try:
        yield ImageServer(process, python, port, env)
    finally:
        process.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


def _proc_file(pid: int, name: str) -> list[str]:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace").split("\0")


def test_entrypoint_execs_the_api_server_with_the_flags_from_the_environment(
    server: ImageServer,
) -> None:
    pid = server.process.pid
    assert pid is not None
    # exec, not a child: the process that was started *is* vLLM's API server now.
    cmdline = _proc_file(pid, "cmdline")
    assert "vllm.entrypoints.openai.api_server" in cmdline, cmdline
    assert not any(arg.endswith("entrypoint.py") for arg in cmdline), cmdline
    for flag, value in [
        ("--served-model-name", SERVED_NAME),
        ("--max-model-len", str(MAX_MODEL_LEN)),
        ("--port", str(server.port)),
        ("--dtype", "float32"),
    ]:
        assert cmdline[cmdline.index(flag) + 1] == value
    assert "--enforce-eager" in cmdline
    assert cmdline[cmdline.index("--max-num-seqs") + 1] == "4"
    # The variables it read are not left for vLLM, whose VLLM_* namespace they are not in.
    environ = {entry.partition("=")[0] for entry in _proc_file(pid, "environ")}
    assert not environ & {"VLLM_MODEL", "VLLM_API_PORT", "VLLM_EXTRA_ARGS"}, environ
    assert "VLLM_CPU_KVCACHE_SPACE" in environ  # vLLM's own variables pass through


def test_health_models_completion_and_metrics_on_one_port(server: ImageServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200

        models = client.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == [SERVED_NAME]
        assert models[0]["max_model_len"] == MAX_MODEL_LEN

        completion = client.post(
            "/v1/completions",
            json={"model": SERVED_NAME, "prompt": "hello", "max_tokens": 3, "temperature": 0},
        )
        assert completion.status_code == 200, completion.text
        assert completion.json()["usage"]["completion_tokens"] >= 1

        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        for family in VLLM_METRICS:
            assert f"# TYPE {family}" in metrics.text, family
        assert f'model_name="{SERVED_NAME}"' in metrics.text


def test_image_healthcheck_script(server: ImageServer) -> None:
    def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "VLLM_API_PORT": str(port)}
        return subprocess.run(
            [str(server.python), str(IMAGE_DIR / "healthcheck.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert healthcheck(server.port).returncode == 0
    closed = healthcheck(free_port())
    assert closed.returncode == 1
    assert "/health" in closed.stderr


def test_sigterm_to_the_started_process_stops_vllm(server: ImageServer) -> None:
    """Runs last in this module: signals reach vLLM because the entrypoint exec'd it."""
    pid = server.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # the process only, as a container runtime does to PID 1
    started = time.monotonic()
    wait_for(
        "vLLM to exit after SIGTERM", lambda: server.process.returncode is not None, timeout=60
    )
    assert time.monotonic() - started < 60
    assert not server.process.healthy()
