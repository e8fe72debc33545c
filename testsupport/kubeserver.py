"""The in-memory Kubernetes API (`MemKube`, testsupport/memkube.py) served over HTTP on
loopback, as the API server serves itself: for the tests of what speaks HTTP to the API
(the `Kube` client's list and watch under the operator's cache and the router's ConfigMap
source, `kubectl ib` run with a kubeconfig). One store, so a test sets the scene and reads
the outcome through `kube` whichever way the code under test reaches it.

The wire as the real server speaks it: object, collection and status URLs (`/api/v1/...`,
`/apis/GROUP/VERSION/...`, namespaced or across namespaces); list items without `apiVersion`
and `kind`; watches as JSON lines, with `410 Gone` as an ERROR event; merge patches, apply
patches (`fieldManager`, `dryRun=All`: 201 for what would be created), status patches,
creations and deletions by uid precondition; failures as `Status` bodies with the code and
reason. Every request is recorded (method, path, query, headers and the status answered).
Not served (no test speaks them over HTTP yet): Events, namespaces themselves, other
subresources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiohttp import web

from inferops.kube import KubeError, Obj, WatchExpired
from testsupport.aioserve import Served, serve
from testsupport.memkube import MemKube

_REASONS = {404: "NotFound", 409: "Conflict", 410: "Expired", 422: "Invalid"}


@dataclass(frozen=True)
class Seen:
    """One request as the server received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    status: int


def status_body(code: int, message: str) -> Obj:
    """The `Status` object the API server answers a failure with."""
    reason = _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _line(event: Obj) -> bytes:
    return json.dumps(event).encode() + b"\n"


def _split(url: str) -> tuple[str, str | None, bool]:
    """(collection URL, object name or None, whether the status subresource is meant)."""
    parts = url.rstrip("/").split("/")
    base = 3 if parts[1] == "api" else 4  # /api/v1 | /apis/GROUP/VERSION
    rest = parts[base:]
    scope = parts[:base]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        scope, rest = scope + rest[:2], rest[2:]
    collection = "/".join(scope + rest[:1])
    name = rest[1] if len(rest) > 1 else None
    return collection, name, rest[2:] == ["status"]


@dataclass
class KubeServer:
    """`kube` served on 127.0.0.1; `start()` it, `url` is where it listens."""

    kube: MemKube = field(default_factory=MemKube)
    requests: list[Seen] = field(default_factory=list)
    _served: Served | None = None

    @property
    def url(self) -> str:
        assert self._served, "start() first"
        return self._served.url

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._served = await serve(app)

    async def stop(self) -> None:
        """Stops listening; open watches end."""
        self.kube.end_watches()
        if self._served:
            await self._served.close()
            self._served = None

    def kubeconfig(self, directory: Path, token: str, namespace: str | None = None) -> Path:
        """A kubeconfig for this server (a bearer token; `namespace`: the default one)."""
        context = {"cluster": "memkube", "user": "me"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "memkube", "cluster": {"server": self.url}}],
            "users": [{"name": "me", "user": {"token": token}}],
            "contexts": [{"name": "memkube", "context": context}],
            "current-context": "memkube",
        }
        path = directory / "kubeconfig"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            response = await self._answer(request)
        except KubeError as error:
            response = web.json_response(
                status_body(error.status, error.message), status=error.status
            )
        self.requests.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                response.status,
            )
        )
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        collection, name, status = _split(request.path)
        url = f"{collection}/{name}" if name else collection
        query = request.query
        selectors = query.get("labelSelector"), query.get("fieldSelector")
        if request.method == "GET" and name is None and query.get("watch") == "true":
            return await self._watch(request, collection)
        if request.method == "GET" and name is None:
            items, version = await self.kube.list_versioned(collection, *selectors)
            for item in items:  # as the API server lists them: the kind is the list's
                item.pop("apiVersion", None)
                item.pop("kind", None)
            return web.json_response({"items": items, "metadata": {"resourceVersion": version}})
        if request.method == "POST" and name is None:
            return web.json_response(await self.kube.create(await request.json()), status=201)
        if request.method == "PATCH" and request.content_type == "application/apply-patch+yaml":
            return await self._apply(request)
        current = await self.kube.get(url) if request.method == "GET" else self.kube.stored(url)
        if request.method == "GET" and current is not None:
            return web.json_response(current)
        if current is None:
            raise KubeError(404, f'{url.rsplit("/", 2)[-2]} "{name}" not found')
        if request.method == "PATCH" and status:
            body = await request.json()
            return web.json_response(await self.kube.patch_status(current, body["status"]))
        if request.method == "PATCH":
            return web.json_response(await self.kube.merge_patch(current, await request.json()))
        if request.method == "DELETE":
            uid = ((await request.json()).get("preconditions") or {}).get("uid")
            await self.kube.delete({**current, "metadata": {**current["metadata"], "uid": uid}})
            return web.json_response(current)
        raise KubeError(405, f"{request.method} {request.path} is not served")

    async def _apply(self, request: web.Request) -> web.Response:
        obj: Obj = yaml.safe_load(await request.text())
        if request.query.get("dryRun") == "All":
            answer, existed = await self.kube.try_apply(obj)
            return web.json_response(answer, status=200 if existed else 201)
        existed = self.kube.stored(obj) is not None
        answer = await self.kube.apply(obj, field_manager=request.query.get("fieldManager"))
        return web.json_response(answer, status=200 if existed else 201)

    async def _watch(self, request: web.Request, collection: str) -> web.StreamResponse:
        query = request.query
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        events = self.kube.watch(
            collection,
            query["resourceVersion"],
            query.get("labelSelector"),
            query.get("fieldSelector"),
            int(query.get("timeoutSeconds", "290")),
        )
        try:
            try:
                async for kind, obj in events:
                    await response.write(_line({"type": kind, "object": obj}))
            except WatchExpired:
                gone = status_body(410, "too old resource version")
                await response.write(_line({"type": "ERROR", "object": gone}))
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away
        return response


__all__ = ["KubeServer", "Seen", "status_body"]
