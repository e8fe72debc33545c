"""The few API calls the launcher makes itself (readiness polling, node creation), through
the project's one Kubernetes client (`inferops.kube`) from synchronous code, plus a plain
health probe for the components' own endpoints."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferops.kube import Kube, KubeError

REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class APIClient:
    """Talks to one apiserver as one client-certificate identity."""

    def __init__(self, server: str, ca_cert: Path, client_cert: Path, client_key: Path) -> None:
        self.server = server.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=str(ca_cert))
        self._ssl.load_cert_chain(str(client_cert), str(client_key))

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """Send one request: HTTP errors return a Response, connection errors raise OSError."""

        async def once() -> Response:
            async with Kube(self.server, "inferops-localcluster", self._ssl, connections=1) as api:
                answer = await api.request(method, path, json_body=body, timeout=REQUEST_TIMEOUT)
            return Response(answer.status, answer.text.encode())

        try:
            return asyncio.run(once())
        except KubeError as error:  # only transport failures: statuses are returned
            raise OSError(error.message) from error

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Response:
        return self.request("POST", path, body)


def probe(url: str, *, insecure: bool = False, timeout: float = 2.0) -> tuple[bool, str]:
    """GET a health endpoint; return (ok, short reason) and never raise.

    ``insecure`` is for kube-controller-manager's and kube-scheduler's in-memory
    self-signed serving certificates on loopback: there is no CA to verify them with,
    and only the health status is read.
    """
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    # An empty ProxyHandler: a user's HTTPS_PROXY must never route loopback calls to
    # the cluster through a proxy (urllib, unlike Go, does not exempt 127.0.0.1).
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )
    try:
        with opener.open(url, timeout=timeout) as resp:
            body = resp.read(200).decode(errors="replace").strip()
            return resp.status == 200, f"HTTP {resp.status} {body}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code} {err.read(300).decode(errors='replace').strip()}"
    except (OSError, ssl.SSLError) as err:
        return False, str(getattr(err, "reason", err))
