"""The same model on both real engines gives the same greedy answers.

vLLM (its CPU build) serves the generated tiny Llama from its Hugging Face files; real
Ollama serves a GGUF written from those very weights (``e2e.engines.tiny_gguf``) with a
Modelfile template equal to the tokenizer's chat template. Asked the same chat prompts at
temperature 0 through each engine's own API, the two answer token for token alike: the same
prompt and answer token counts, and the same text once one rendering difference is removed.

Where and why they differ (measured, 24-token answers):

- Bytes that are not valid UTF-8 on their own. A byte-level BPE token can be part of a
  multi-byte character, and a random-weight model emits such tokens in any order. vLLM
  renders each incomplete sequence as U+FFFD (the replacement character) where Ollama holds
  the bytes back, hoping the next token completes them. With the same tokens, vLLM's text
  has U+FFFD where Ollama's has nothing: every U+FFFD is removed before comparing. Ollama
  may also hold back the visible token after such bytes (an answer to "Ünïcödé and emoji 🙂
  in a prompt": vLLM ``er�\t�To are�Eachwo``, Ollama ``er\t arewo``, both 24 tokens):
  prompts whose answers do that are left out.
- Arithmetic. vLLM computes in the checkpoint's bfloat16, Ollama (llama.cpp) in the GGUF's
  float32 with its own kernels; a random-weight model has near-ties between logits, so a
  greedy answer can leave the other engine's: the answer to "Hello" had the same 23 tokens
  and a different 24th (with vLLM in float32 it left at the 9th: the kernels differ as well
  as the precision). "Metrics count requests and errors." and "Please answer in one short
  sentence." (the same 29 and 33 prompt tokens on both) differ from the first answer token,
  which we put down to the same cause without having proven it token by token. Left out
  here: of 11 prompts tried, the 6 below agree.
- Digits. "Count from 0 to 10." is 27 prompt tokens for vLLM (Hugging Face ``tokenizers``)
  and 29 for Ollama (llama.cpp's ``gpt2`` pre-tokenizer): the two split the digits
  differently, so the answers differ from the first token.
  ``test_digits_are_tokenized_differently`` pins that, so that a fix shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest
from openai import OpenAI
from testsupport.markers import needs

from e2e.engines.ollama_server import OllamaServer
from e2e.engines.tiny_gguf import ensure_tiny_gguf
from e2e.engines.tiny_model import ensure_tiny_model
from e2e.engines.vllm_server import VLLMServer

pytestmark = needs("vllm", "ollama")

MODEL = "llama3.2"
MAX_TOKENS = 24
PROMPTS = [
    "Why is the sky blue?",
    "Summarise my notes in one line.",
    "The router sends each request to one of two engines.",
    "Tell me about the weather today.",
    "What is the time to first token?",
    "A bad step rolls back on its own.",
]


def normalise(text: str) -> str:
    """Drops what only differs by how an engine renders incomplete UTF-8 (see above)."""
    return text.replace("\ufffd", "").strip()


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    logs: Path = tmp_path_factory.mktemp("engines")
    model = ensure_tiny_model()
    with (
        VLLMServer(model, served_model_name=MODEL, log_path=logs / "vllm.log") as vllm,
        OllamaServer(
            model_names=[MODEL], model_dir=ensure_tiny_gguf(model), log_path=logs / "ollama.log"
        ) as real_ollama,
    ):
        real_ollama.start()
        vllm.start()
        yield vllm.url, real_ollama.url


@pytest.mark.parametrize("prompt", PROMPTS)
def test_vllm_and_ollama_give_the_same_greedy_answer(engines: tuple[str, str], prompt: str) -> None:
    vllm_url, ollama_url = engines
    messages = [{"role": "user", "content": prompt}]
    from_vllm = OpenAI(base_url=f"{vllm_url}/v1", api_key="unused").chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=MAX_TOKENS,
        temperature=0,  # type: ignore[arg-type]
    )
    from_ollama = ollama.Client(host=ollama_url).chat(
        model=MODEL, messages=messages, options={"num_predict": MAX_TOKENS, "temperature": 0}
    )
    vllm_text = from_vllm.choices[0].message.content or ""
    ollama_text = from_ollama.message.content or ""
    assert from_vllm.usage is not None
    print(f"\n{prompt!r}\n  vLLM:   {vllm_text!r}\n  Ollama: {ollama_text!r}")
    assert normalise(vllm_text) == normalise(ollama_text)
    assert normalise(vllm_text), "an empty answer would agree trivially"
    # Same prompt on both sides: the templates render the same tokens.
    assert from_vllm.usage.prompt_tokens == from_ollama.prompt_eval_count
    assert from_vllm.usage.completion_tokens == from_ollama.eval_count


def test_digits_are_tokenized_differently(engines: tuple[str, str]) -> None:
    """The one known tokenizer difference (module docstring): if this fails, the engines
    now agree on digits too and the prompt belongs in PROMPTS."""
    vllm_url, ollama_url = engines
    messages = [{"role": "user", "content": "Count from 0 to 10."}]
    from_vllm = OpenAI(base_url=f"{vllm_url}/v1", api_key="unused").chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=1,  # type: ignore[arg-type]
    )
    from_ollama = ollama.Client(host=ollama_url).chat(
        model=MODEL, messages=messages, options={"num_predict": 1}
    )
    assert from_vllm.usage is not None
    assert (from_vllm.usage.prompt_tokens, from_ollama.prompt_eval_count) == (27, 29)
