"""Ollama's native API in terms of the OpenAI API: requests one way, answers the other way.

Pure apart from reading the clock for timestamps and durations. The shapes follow what the
official `ollama` client parses (`ollama._types`): `message`/`response` fragments with
`done: false`, then one `done: true` object carrying `done_reason`, durations in nanoseconds
and token counts.

Choices made where the two APIs do not line up:
- `/api/generate` becomes a chat completion with the prompt as the user message (and `system`
  as a system message), because Ollama applies the model's chat template to a prompt; a plain
  completion would make an instruct model continue the text instead of answering it. Only
  `raw: true` (no template) and `suffix` (fill-in-the-middle) go to `/v1/completions`. A
  custom `template` cannot be applied (it is a Go template) and is ignored, as is `context`.
- Options: the table `inferops.api.features` says what becomes of each (its `mapped`
  options are renamed here; `num_predict` > 0 becomes `max_tokens`); the rest are left out.
  Only requests that go to vLLM are translated: toward Ollama they pass through.
- `format: "json"` becomes `response_format: {"type": "json_object"}`; a JSON schema becomes a
  `json_schema` response format.
- Streams ask the engine for usage (`stream_options.include_usage`) to fill `eval_count` and
  `prompt_eval_count`. Non-stream answers report the whole engine time as `eval_duration`
  (the split between prompt and generation is not known there) and 0 as load/prompt time.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from inferops.api.features import FEATURES
from inferops.router.errors import RouterError, bad_request, stream_error_ollama
from inferops.router.relay import usage_counts
from inferops.router.routes import CHAT_PATH, COMPLETIONS_PATH
from inferops.router.sse import SseParser

Json = dict[str, Any]

OPTION_NAMES = tuple(
    (feature.name, feature.vllm)
    for feature in FEATURES
    if feature.where == "option" and feature.rule == "mapped" and feature.name != "num_predict"
)
"""(Ollama option, vLLM field) of the options renamed one to one (`inferops.api.features`);
`num_predict` has its own rule below."""

# Base64 prefixes of the image formats the engines accept, for the data URL's media type.
IMAGE_PREFIXES = (
    ("/9j/", "image/jpeg"),
    ("iVBOR", "image/png"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: object) -> bytes:
    """Compact UTF-8 JSON. A lone surrogate (`"\\ud800"` is valid JSON, and Python decodes
    it) has no UTF-8 form: such a document is written with every non-ASCII character
    escaped, which says the same thing."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode()


# -- requests ------------------------------------------------------------------------------


def _sampling(doc: Json, out: Json) -> None:
    options = doc.get("options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request("'options' must be an object")
        for ollama_name, openai_name in OPTION_NAMES:
            value = options.get(ollama_name)
            if value is not None:
                out[openai_name] = value
        num_predict = options.get("num_predict")
        # Ollama's -1 (no limit) and -2 (fill the context) have no OpenAI spelling: no limit.
        if isinstance(num_predict, int) and num_predict > 0:
            out["max_tokens"] = num_predict
    fmt = doc.get("format")
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": fmt},
        }


def _stream_flags(out: Json, stream: bool) -> Json:
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def _image_url(image: object) -> Json:
    if not isinstance(image, str):
        raise bad_request("images must be base64 strings")
    media = next((m for prefix, m in IMAGE_PREFIXES if image.startswith(prefix)), "image/png")
    return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{image}"}}


def _content(message: Json) -> str | list[Json]:
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise bad_request("a message's 'content' must be a string")
    images = message.get("images")
    if not images:
        return text
    if not isinstance(images, list):
        raise bad_request("a message's 'images' must be a list")
    parts: list[Json] = [{"type": "text", "text": text}] if text else []
    return parts + [_image_url(image) for image in images]


def convert_messages(messages: object) -> list[Json]:
    """Ollama chat messages as OpenAI ones. Ollama's tool calls have no ids and its tool
    results name the tool instead, so ids are made up and tool results matched by name."""
    if messages is None:
        return []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise bad_request("'messages' must be a list of objects")
    out: list[Json] = []
    pending: list[tuple[str, str]] = []  # (id, tool name) of calls not answered yet
    counter = 0
    for message in messages:
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise bad_request("every message needs a 'role'")
        converted: Json = {"role": role, "content": _content(message)}
        calls = message.get("tool_calls")
        if calls:
            pending = []
            openai_calls: list[Json] = []
            for call in calls if isinstance(calls, list) else []:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    raise bad_request("a tool call needs a 'function'")
                name = str(function.get("name", ""))
                arguments = function.get("arguments", {})
                if not isinstance(arguments, str):
                    arguments = json.dumps(arguments)
                call_id = call.get("id") or f"call_{counter}"
                counter += 1
                openai_calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": arguments,
                        },
                    }
                )
                pending.append((call_id, name))
            converted["tool_calls"] = openai_calls
        if role == "tool":
            name = message.get("tool_name") or message.get("name") or ""
            match = next((i for i, (_, n) in enumerate(pending) if n == name), 0 if pending else -1)
            if match >= 0:
                converted["tool_call_id"] = pending.pop(match)[0]
            else:
                converted["tool_call_id"] = f"call_{counter}"
                counter += 1
            if name:
                converted["name"] = name
        out.append(converted)
    return out


def chat_request(doc: Json, model: str, stream: bool) -> Json:
    out: Json = {"model": model, "messages": convert_messages(doc.get("messages"))}
    tools = doc.get("tools")
    if tools:
        out["tools"] = tools
    _sampling(doc, out)
    return _stream_flags(out, stream)


def generate_request(doc: Json, model: str, stream: bool) -> tuple[str, Json]:
    """The upstream path and body for an `/api/generate` request."""
    prompt = doc.get("prompt") or ""
    system = doc.get("system")
    suffix = doc.get("suffix")
    if not isinstance(prompt, str) or not isinstance(system, str | None):
        raise bad_request("'prompt' and 'system' must be strings")
    out: Json
    if doc.get("raw") or suffix:
        out = {"model": model, "prompt": prompt}
        if suffix:
            out["suffix"] = suffix
        path = COMPLETIONS_PATH
    else:
        messages: list[Json] = [{"role": "system", "content": system}] if system else []
        user = {"content": prompt, "images": doc.get("images")}
        messages.append({"role": "user", "content": _content(user)})
        out = {"model": model, "messages": messages}
        path = CHAT_PATH
    _sampling(doc, out)
    return path, _stream_flags(out, stream)


def embed_inputs(doc: Json) -> str | list[str]:
    value = doc.get("input")
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise bad_request("'input' must be a string or a list of strings")


def embed_request(doc: Json, model: str, inputs: str | list[str]) -> Json:
    out: Json = {"model": model, "input": inputs, "encoding_format": "float"}
    dimensions = doc.get("dimensions")
    if isinstance(dimensions, int) and dimensions > 0:
        out["dimensions"] = dimensions
    return out


# -- answers -------------------------------------------------------------------------------


def done_reason(finish_reason: object) -> str:
    # Ollama reports tool calls and content filtering as an ordinary stop.
    return "length" if finish_reason == "length" else "stop"


def _arguments(raw: object) -> Json:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def ollama_tool_calls(calls: list[Json]) -> list[Json]:
    out: list[Json] = []
    for call in calls:
        function = call.get("function") or {}
        out.append(
            {
                "function": {
                    "name": function.get("name") or "",
                    "arguments": _arguments(function.get("arguments")),
                }
            }
        )
    return out


def _final_stats(total_ns: int, prompt_ns: int, eval_ns: int, usage: object) -> Json:
    prompt, completion = usage_counts(usage)
    stats: Json = {"total_duration": total_ns, "load_duration": 0}
    if prompt is not None:
        stats["prompt_eval_count"] = prompt
    stats["prompt_eval_duration"] = prompt_ns
    if completion is not None:
        stats["eval_count"] = completion
    stats["eval_duration"] = eval_ns
    return stats


def _first_choice(answer: Json) -> Json:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise RouterError(502, "the engine's answer has no choices", "bad_engine_answer")
    return choices[0]


def _reasoning(message: Json) -> str | None:
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) and value else None


def chat_answer(answer: Json, model: str, total_ns: int) -> Json:
    choice = _first_choice(answer)
    message = choice.get("message") or {}
    out_message: Json = {"role": "assistant", "content": message.get("content") or ""}
    thinking = _reasoning(message)
    if thinking:
        out_message["thinking"] = thinking
    if message.get("tool_calls"):
        out_message["tool_calls"] = ollama_tool_calls(message["tool_calls"])
    return {
        "model": model,
        "created_at": now_rfc3339(),
        "message": out_message,
        "done": True,
        "done_reason": done_reason(choice.get("finish_reason")),
        **_final_stats(total_ns, 0, total_ns, answer.get("usage")),
    }


def generate_answer(answer: Json, model: str, total_ns: int, chat: bool) -> Json:
    choice = _first_choice(answer)
    out: Json = {"model": model, "created_at": now_rfc3339()}
    if chat:
        message = choice.get("message") or {}
        out["response"] = message.get("content") or ""
        thinking = _reasoning(message)
        if thinking:
            out["thinking"] = thinking
    else:
        out["response"] = choice.get("text") or ""
    out.update(
        done=True,
        done_reason=done_reason(choice.get("finish_reason")),
        **_final_stats(total_ns, 0, total_ns, answer.get("usage")),
    )
    return out


def _vectors(answer: Json) -> list[Any]:
    data = answer.get("data")
    if not isinstance(data, list):
        raise RouterError(502, "the engine's answer has no embeddings", "bad_engine_answer")
    ordered = sorted(data, key=lambda item: item.get("index", 0))
    return [item.get("embedding") for item in ordered]


def embed_answer(answer: Json, model: str, total_ns: int) -> Json:
    out: Json = {
        "model": model,
        "embeddings": _vectors(answer),
        "total_duration": total_ns,
        "load_duration": 0,
    }
    prompt, _ = usage_counts(answer.get("usage"))
    if prompt is not None:
        out["prompt_eval_count"] = prompt
    return out


def embeddings_answer(answer: Json) -> Json:
    vectors = _vectors(answer)
    return {"embedding": vectors[0] if vectors else []}


def loaded(model: str, chat: bool) -> Json:
    """Ollama's answer to a request with nothing to generate: the model is (already) loaded."""
    out: Json = {"model": model, "created_at": now_rfc3339()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason="load")
    return out


def error_message(body: bytes, status: int) -> str:
    """The message inside an engine's error answer (OpenAI's, vLLM's older or plain text)."""
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:1000] or f"engine answered HTTP {status}"
    if isinstance(doc, dict):
        error = doc.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(doc.get("message"), str):
            return str(doc["message"])
    return f"engine answered HTTP {status}"


# -- streams -------------------------------------------------------------------------------


class OllamaStream:
    """Turns an engine's SSE stream (chat or completions) into Ollama's NDJSON stream."""

    content_type = "application/x-ndjson"

    def __init__(self, model: str, chat_api: bool, chat_upstream: bool, start_ns: int) -> None:
        self.model = model
        self.chat_api = chat_api  # /api/chat (message) rather than /api/generate (response)
        self.chat_upstream = chat_upstream
        self.start_ns = start_ns
        self.first_ns = 0
        self.parser = SseParser()
        self.usage: object = None
        self.finish_reason: object = None
        self.saw_done = False
        self.failed: str | None = None
        self.calls: dict[int, Json] = {}

    def _fragment(self, text: str, thinking: str | None) -> bytes:
        out: Json = {"model": self.model, "created_at": now_rfc3339()}
        if self.chat_api:
            message: Json = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            out["message"] = message
        else:
            out["response"] = text
            if thinking:
                out["thinking"] = thinking
        out["done"] = False
        return dumps(out) + b"\n"

    def _collect_calls(self, deltas: object) -> None:
        # OpenAI streams a tool call's arguments in pieces; Ollama sends whole calls.
        for delta in deltas if isinstance(deltas, list) else []:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", 0)
            call = self.calls.setdefault(index, {"function": {"name": "", "arguments": ""}})
            function = delta.get("function") or {}
            if function.get("name"):
                call["function"]["name"] += function["name"]
            if function.get("arguments"):
                call["function"]["arguments"] += function["arguments"]

    def feed(self, chunk: bytes) -> bytes:
        lines: list[bytes] = []
        for data in self.parser.feed(chunk):
            if data == b"[DONE]":
                self.saw_done = True
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                self.failed = error_message(data, 500)
                lines.append(stream_error_ollama(self.failed))
                continue
            if event.get("usage"):
                self.usage = event["usage"]
            choices = event.get("choices")
            if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
                continue
            choice = choices[0]
            if self.chat_upstream:
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    delta = {}
                text = delta.get("content") or ""
                thinking = _reasoning(delta)
                if delta.get("tool_calls"):
                    self._collect_calls(delta["tool_calls"])
            else:
                text, thinking = choice.get("text") or "", None
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if text or thinking:
                if not self.first_ns:
                    self.first_ns = time.monotonic_ns()
                lines.append(self._fragment(text, thinking))
        return b"".join(lines) if lines else b""

    def finish(self) -> bytes:
        if self.failed:
            return b""
        if not (self.saw_done or self.finish_reason):
            self.failed = "the engine ended the stream before finishing"
            return stream_error_ollama(self.failed)
        out = b""
        if self.calls and self.chat_api:
            calls = [self.calls[i] for i in sorted(self.calls)]
            message = {"role": "assistant", "content": "", "tool_calls": ollama_tool_calls(calls)}
            out = (
                dumps(
                    {
                        "model": self.model,
                        "created_at": now_rfc3339(),
                        "message": message,
                        "done": False,
                    }
                )
                + b"\n"
            )
        end_ns = time.monotonic_ns()
        first_ns = self.first_ns or end_ns
        final: Json = {"model": self.model, "created_at": now_rfc3339()}
        if self.chat_api:
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        final.update(
            done=True,
            done_reason=done_reason(self.finish_reason),
            **_final_stats(
                end_ns - self.start_ns, first_ns - self.start_ns, end_ns - first_ns, self.usage
            ),
        )
        return out + dumps(final) + b"\n"

    def error(self, message: str, code: str) -> bytes:
        return stream_error_ollama(message)

    def counts(self) -> tuple[int | None, int | None]:
        return usage_counts(self.usage)


__all__ = [
    "OllamaStream",
    "chat_answer",
    "chat_request",
    "convert_messages",
    "dumps",
    "embed_answer",
    "embed_inputs",
    "embed_request",
    "embeddings_answer",
    "error_message",
    "generate_answer",
    "generate_request",
    "loaded",
]
