"""Errors the router answers itself, rendered in the caller's dialect.

OpenAI routes answer `{"error": {"message", "type", "code"}}` (what the OpenAI clients parse);
Ollama routes answer `{"error": "..."}` (what Ollama and its clients use). The message always
names the problem, so a consumer's log says what to fix.
"""

from __future__ import annotations

import json

from inferops.router.http1 import Reply

OPENAI = "openai"
OLLAMA = "ollama"


class RouterError(Exception):
    """A request the router refuses or cannot complete."""

    def __init__(self, status: int, message: str, code: str, kind: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.consumer: str | None = None
        """The consumer, when it was known before the request was refused."""


def bad_json(detail: str) -> RouterError:
    return RouterError(400, f"the request body is not valid JSON: {detail}", "invalid_json")


def bad_request(message: str) -> RouterError:
    return RouterError(400, message, "invalid_request")


def too_large(limit: int) -> RouterError:
    return RouterError(
        413, f"the request body is larger than the limit of {limit} bytes", "request_too_large"
    )


def unsupported_encoding(encoding: str) -> RouterError:
    return RouterError(
        415,
        f"Content-Encoding {encoding!r} is not accepted: send the request body uncompressed "
        "(as vLLM and Ollama take it)",
        "unsupported_content_encoding",
    )


def unknown_model(model: str, served: str) -> RouterError:
    return RouterError(
        404, f"model {model!r} not found: this endpoint serves {served!r}", "model_not_found"
    )


def kind_not_served(message: str) -> RouterError:
    """A request kind no engine of the table serves (`routes.KindRoute.refusal`): 404, as
    for an unknown route, so that clients do not retry it."""
    return RouterError(404, message, "kind_not_served")


def unknown_consumer(host: str | None, override: str | None) -> RouterError:
    if override:
        what = f"X-Inferops-Consumer {override!r} names no consumer"
    else:
        what = f"Host {host!r} matches no consumer"
    return RouterError(404, f"unknown consumer: {what} of this router", "consumer_not_found")


def untrusted_consumer_header() -> RouterError:
    return RouterError(
        400,
        "X-Inferops-Consumer is not accepted by this router (it was started without "
        "--trust-consumer-header): the consumer is the Service you call, named by Host; "
        "remove the header",
        "consumer_header_not_trusted",
    )


def managed_model(method: str, path: str, model: str | None) -> RouterError:
    """Ollama's model management (pull, push, create, copy, delete, blobs) is refused: the
    model is declared in the InferenceBackend and rolled out by the operator to both engines,
    so a change made on one engine behind the router would be wrong on the other and undone
    at the engine's next restart."""
    which = f"the model {model!r}" if model else "the model"
    return RouterError(
        403,
        f"{method} {path} is not served here: {which} is declared in its InferenceBackend "
        "resource and rolled out by the inferops operator. To change it, edit the "
        "InferenceBackend's spec.ollama.model (the Ollama tag) and spec.vllm.model "
        "(the vLLM model)",
        "model_managed_by_operator",
    )


RETRY_AFTER_SECONDS = 1
RETRY_AFTER = b"Retry-After: %d\r\n" % RETRY_AFTER_SECONDS
"""The header of an overload refusal: a slot frees about once per request's duration, so a
short wait is enough, and the clients that honour it (OpenAI's) add jitter of their own."""


def overloaded(
    engine: str, queue_full: bool, limit: int, waiting: int, waited: float
) -> RouterError:
    """Refused for overload: 503 (the service is over its capacity for now, as Ollama's own
    "server busy" answer), not 429 (which tells a client it sent too much)."""
    if queue_full:
        why = f"{limit} requests under way and {waiting} waiting, its limit"
    else:
        why = f"no slot freed within {waited:.3g}s (its {limit} request slots stayed busy)"
    return RouterError(
        503,
        f"engine {engine!r} is overloaded: {why}; retry after {RETRY_AFTER_SECONDS}s",
        "engine_overloaded",
        "server_error",
    )


def no_table() -> RouterError:
    return RouterError(503, "no routing table loaded yet", "no_routing_table", "server_error")


def dialect_of(path: str | None) -> str:
    """The dialect of a route: Ollama's under `/api/`, OpenAI's elsewhere."""
    return OLLAMA if path and path.startswith("/api/") else OPENAI


def render(dialect: str, error: RouterError, headers: bytes = b"") -> Reply:
    if dialect == OLLAMA:
        payload: object = {"error": error.message}
    else:
        payload = {"error": {"message": error.message, "type": error.kind, "code": error.code}}
    return Reply(error.status, json.dumps(payload).encode(), b"application/json", headers)


def stream_error_openai(message: str, code: str) -> bytes:
    """An in-band SSE error event: the OpenAI clients raise on it."""
    payload = {"error": {"message": message, "type": "server_error", "code": code}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def stream_error_ollama(message: str) -> bytes:
    """An in-band NDJSON error line: the Ollama clients raise on it."""
    return json.dumps({"error": message}).encode() + b"\n"


__all__ = [
    "OLLAMA",
    "OPENAI",
    "RETRY_AFTER",
    "RETRY_AFTER_SECONDS",
    "RouterError",
    "bad_json",
    "bad_request",
    "dialect_of",
    "kind_not_served",
    "managed_model",
    "no_table",
    "overloaded",
    "render",
    "stream_error_ollama",
    "stream_error_openai",
    "too_large",
    "unknown_consumer",
    "unknown_model",
    "unsupported_encoding",
    "untrusted_consumer_header",
]
