"""A tiny stdlib HTTPS client for the few API calls the launcher makes itself.

Readiness polling and node creation happen many times per ``up``; doing them over a
kept TLS context with ``urllib`` is much faster than starting kubectl for each poll,
and keeps this package free of the kubernetes client library.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        ctx = ssl.create_default_context(cafile=str(ca_cert))
        ctx.load_cert_chain(str(client_cert), str(client_key))
        self._opener = _opener(ctx)

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """Send one request: HTTP errors return a Response, connection errors raise OSError."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        req.add_header("Accept", "application/json")
        try:
            with self._opener.open(req, timeout=REQUEST_TIMEOUT) as resp:
                return Response(resp.status, resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read())

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Response:
        return self.request("POST", path, body)


def _opener(ctx: ssl.SSLContext) -> urllib.request.OpenerDirector:
    # An empty ProxyHandler: a user's HTTPS_PROXY must never route loopback calls to
    # the cluster through a proxy (urllib, unlike Go, does not exempt 127.0.0.1).
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx)
    )


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
    try:
        with _opener(ctx).open(url, timeout=timeout) as resp:
            body = resp.read(200).decode(errors="replace").strip()
            return resp.status == 200, f"HTTP {resp.status} {body}"
    except urllib.error.HTTPError as err:
        return False, f"HTTP {err.code} {err.read(300).decode(errors='replace').strip()}"
    except (OSError, ssl.SSLError) as err:
        return False, str(getattr(err, "reason", err))
