"""The demo's data plane as a background process that outlives `make demo`.

`make demo` ends with commands to try (the official clients and curl against a consumer's
endpoint, `kubectl ib`, ...), so the router, the engines and Prometheus must still run once
it returns. This module runs `e2e.dataplane.DataPlane` in a process of its own session:

- it starts the engines and Prometheus, then the router as soon as the operator has written
  the backend's routing table, and writes what it serves to ``state.json`` (the operator's
  flags, the router's and Prometheus's URLs) as each part comes up;
- a small control server on loopback lets the demo inject faults in front of vLLM
  (``POST /faults`` with ``{"fail_status": 500}``; ``{}`` clears them);
- SIGTERM stops every part; `make cluster-down` (``python -m e2e.demo --stop``) sends it.

CLI (started by `e2e.demo`): ``python -m e2e.demoplane --dir DIR --namespace NS --backend B``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testsupport.process import tail

from e2e.dataplane import DataPlane
from e2e.harness import Kubectl

STATE_FILE = "state.json"
PID_FILE = "dataplane.pid"
LOG_FILE = "dataplane.log"
TABLE_TIMEOUT = 600.0
"""How long the router waits for the operator to write the routing table."""


@dataclass
class PlaneState:
    """What the background data plane serves, as it comes up (read by `e2e.demo`)."""

    operator_args: list[str] = field(default_factory=list)
    router_url: str = ""
    prometheus_url: str = ""
    control_url: str = ""
    error: str = ""

    @classmethod
    def read(cls, directory: Path) -> PlaneState:
        try:
            return cls(**json.loads((directory / STATE_FILE).read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return cls()

    def write(self, directory: Path) -> None:
        partial = directory / f".{STATE_FILE}.tmp"
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(directory / STATE_FILE)  # readers never see half a file


def _control_server(plane: DataPlane) -> ThreadingHTTPServer:
    """`POST /faults` sets the faults in front of vLLM from a JSON object of `Faults` fields."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert plane.faults is not None
            try:
                fields = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                plane.faults.standin.faults.clear()
                for name, value in fields.items():
                    if not hasattr(plane.faults.standin.faults, name):
                        raise ValueError(f"no fault named {name!r}")
                    setattr(plane.faults.standin.faults, name, value)
            except (ValueError, TypeError, AttributeError) as error:
                self.send_error(400, str(error))
                return
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the demo's terminal is not the place for access logs

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _table_exists(kubectl: Kubectl, namespace: str, backend: str) -> bool:
    result = kubectl.run("get", "configmap", f"{backend}-router", "-n", namespace, check=False)
    return result.returncode == 0


def serve(directory: Path, kubectl: Kubectl, namespace: str, backend: str) -> None:
    """Runs the data plane until SIGTERM; every step is recorded in the state file."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    plane = DataPlane(directory, kubectl)
    state = PlaneState()
    try:
        plane.start()
        control = _control_server(plane)
        state.operator_args = list(plane.operator_args())
        state.control_url = f"http://127.0.0.1:{control.server_port}"
        assert plane.prometheus is not None
        state.prometheus_url = plane.prometheus.url
        state.write(directory)
        deadline = time.monotonic() + TABLE_TIMEOUT
        while not _table_exists(kubectl, namespace, backend):
            if stop.wait(1) or time.monotonic() > deadline:
                raise RuntimeError(f"no routing table {namespace}/{backend}-router appeared")
        plane.serve(namespace, backend)
        state.router_url = plane.router_url
        state.write(directory)
        stop.wait()
    except Exception as error:
        state.error = f"{type(error).__name__}: {error}"
        state.write(directory)
        raise
    finally:
        plane.stop()


class BackgroundPlane:
    """The demo's handle on the background data plane: start, wait for parts, steer, stop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._child: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.directory / PID_FILE

    @property
    def state(self) -> PlaneState:
        return PlaneState.read(self.directory)

    def running(self) -> int | None:
        if self._child is not None and self._child.poll() is not None:
            return None  # started here and exited (a zombie still answers os.kill)
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, kubectl: Kubectl, namespace: str, backend: str) -> None:
        self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / STATE_FILE).unlink(missing_ok=True)
        env = {**kubectl.env, "KUBECONFIG": str(kubectl.kubeconfig)}
        with (self.directory / LOG_FILE).open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "e2e.demoplane",
                    "--dir",
                    str(self.directory),
                    "--kubectl",
                    kubectl.binary,
                    "--namespace",
                    namespace,
                    "--backend",
                    backend,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self._child = process

    def wait(self, what: str, ready: str, timeout: float) -> PlaneState:
        """Waits until the state has the field `ready` set; the log's tail if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state
            if state.error or not self.running():
                raise SystemExit(
                    f"the data plane stopped while waiting for {what}: {state.error}\n"
                    f"{tail(self.directory / LOG_FILE)}"
                )
            if getattr(state, ready):
                return state
            time.sleep(0.5)
        raise SystemExit(
            f"the data plane did not bring up {what} in {timeout:.0f}s; "
            f"see {self.directory / LOG_FILE}"
        )

    def inject(self, **faults: float) -> None:
        """Sets the faults in front of vLLM (none given: clears them)."""
        request = urllib.request.Request(
            f"{self.state.control_url}/faults", data=json.dumps(faults).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if pid := self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # whatever ignored SIGTERM
            print(f"data plane stopped (pid {pid})")
        self.pid_file.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    kubectl = Kubectl(args.kubectl, Path(os.environ["KUBECONFIG"]), dict(os.environ))
    serve(args.dir, kubectl, args.namespace, args.backend)


if __name__ == "__main__":
    main()
