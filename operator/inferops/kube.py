"""A small asynchronous Kubernetes API client: the few verbs the operator needs.

Credentials come from the standard places (in-cluster service account, else KUBECONFIG or
~/.kube/config) through the official client's loaders; requests go through httpx so they
never block the event loop. Every write is counted in `inferops_kube_writes_total`, which is
how "an unchanged resource causes no write" is measured.
"""

from __future__ import annotations

import json
import re
import ssl
from typing import Any

import httpx
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from inferops import metrics
from inferops.registry import PLURALS

Obj = dict[str, Any]


def _count_write(verb: str, obj: Obj) -> None:
    namespace = obj["metadata"]["namespace"]
    metrics.KUBE_WRITES.labels(namespace=namespace, verb=verb, kind=obj["kind"]).inc()


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status and `message` the server's words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing can be created in it any more."""
        return self.status == 403 and "is being terminated" in self.message


# Characters a YAML decoder refuses or reads as line breaks (C1 controls, NEL, the line and
# paragraph separators, surrogates, the non-characters FFFE/FFFF); JSON escapes C0 itself.
_NOT_YAML_PRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


def apply_body(obj: Obj) -> bytes:
    """`obj` as an apply patch. The API server decodes apply patches as YAML, which refuses
    a control character that JSON lets through raw; escaping them (and only them, as
    `ensure_ascii` would also split characters beyond U+FFFF into surrogate pairs the decoder
    refuses too) keeps any string a user wrote intact."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    escaped = _NOT_YAML_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return escaped.encode()


def path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    out = f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{out}/{name}" if name else out


def object_path(obj: Obj) -> str:
    meta = obj["metadata"]
    return path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])


def _load_configuration(config_file: str | None = None) -> Any:
    configuration = k8s_client.Configuration()
    if config_file:
        # An explicit kubeconfig (a tool's --kubeconfig or KUBECONFIG) wins over the pod's
        # service account, as it does for kubectl.
        k8s_config.load_kube_config(config_file=config_file, client_configuration=configuration)
        return configuration
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(client_configuration=configuration)
    return configuration


def kubeconfig_namespace(config_file: str | None = None) -> str | None:
    """The namespace of the kubeconfig's current context (kubectl's default namespace), or
    None when there is no kubeconfig or the context names no namespace."""
    try:
        _, current = k8s_config.list_kube_config_contexts(config_file=config_file)
    except (k8s_config.ConfigException, OSError):
        return None
    namespace = (current or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else None


class _ConfigAuth(httpx.Auth):
    """Asks the loaded configuration for the token on every request, so rotated service
    account tokens and refreshed exec credentials are picked up."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration

    def auth_flow(self, request: httpx.Request) -> Any:
        # "BearerToken" in current clients, "authorization" in older ones.
        token = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            request.headers["Authorization"] = token
        yield request


class Kube:
    """The operator's API client. Use `async with Kube.connect() as kube`."""

    def __init__(self, http: httpx.AsyncClient, field_manager: str) -> None:
        self.http = http
        self.field_manager = field_manager

    @classmethod
    def connect(
        cls, field_manager: str = "inferops-operator", config_file: str | None = None
    ) -> Kube:
        """`config_file`: a kubeconfig path (or `:`-separated list) to use instead of the
        in-cluster service account and the default kubeconfig."""
        configuration = _load_configuration(config_file)
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        http = httpx.AsyncClient(
            base_url=configuration.host,
            verify=context,
            auth=_ConfigAuth(configuration),
            timeout=httpx.Timeout(30.0),
            headers={"Accept": "application/json", "User-Agent": field_manager},
        )
        return cls(http, field_manager)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, url, **kwargs)
        except httpx.TransportError as error:
            # Connection refused or reset, pool or read timeout: a KubeError like any other
            # failed call, so every caller's retry applies to it too.
            raise KubeError(0, f"API server unreachable: {error!r}") from error
        if response.status_code >= 400 and response.status_code != 404:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise KubeError(response.status_code, message)
        return response

    async def get(self, url: str) -> Obj | None:
        response = await self._request("GET", url)
        return None if response.status_code == 404 else dict(response.json())

    async def list(self, url: str, label_selector: str) -> list[Obj]:
        response = await self._request("GET", url, params={"labelSelector": label_selector})
        if response.status_code == 404:
            return []
        return list(response.json().get("items", []))

    async def apply(self, obj: Obj, field_manager: str | None = None) -> Obj:
        """Server-side apply, taking ownership of the fields the operator sets (force).
        `field_manager` applies as another manager than the operator's own (a handover)."""
        _count_write("apply", obj)
        response = await self._request(
            "PATCH",
            object_path(obj),
            params={"fieldManager": field_manager or self.field_manager, "force": "true"},
            content=apply_body(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        return dict(response.json())

    async def delete(self, obj: Obj) -> None:
        """Deletes exactly this object (uid precondition), letting its dependents cascade."""
        _count_write("delete", obj)
        body = {
            "propagationPolicy": "Background",
            "preconditions": {"uid": obj["metadata"]["uid"]},
        }
        await self._request("DELETE", object_path(obj), json=body)

    async def post_event(
        self, obj: Obj, type: str, reason: str, message: str, now: str, component: str
    ) -> None:
        """A core/v1 Event about `obj`, as `kubectl describe` lists them."""
        meta = obj["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": component},
            "reportingComponent": component,
        }
        _count_write("create", event)
        await self._request("POST", path("v1", "Event", meta["namespace"]), json=event)

    async def patch_status(self, obj: Obj, status: Obj) -> Obj:
        _count_write("patch_status", obj)
        response = await self._request(
            "PATCH",
            object_path(obj) + "/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        return dict(response.json())

    async def patch_metadata(self, obj: Obj, patch: Obj) -> Obj:
        """Merge-patches the metadata (annotations, labels) of exactly the version of `obj`
        that was read: its resourceVersion is a precondition, so the server answers 409
        Conflict (a KubeError) when someone wrote the object in between."""
        _count_write("patch_metadata", obj)
        body = {"metadata": {**patch, "resourceVersion": obj["metadata"]["resourceVersion"]}}
        response = await self._request(
            "PATCH",
            object_path(obj),
            params={"fieldManager": self.field_manager},
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status_code == 404:
            raise KubeError(404, f"{obj['kind']} {obj['metadata']['name']} not found")
        return dict(response.json())


__all__ = ["Kube", "KubeError", "Obj", "kubeconfig_namespace", "object_path", "path"]
