# mypy: disable-error-code="import-not-found"
"""Generate a tiny random-weight Llama with a trained tokenizer and a chat template.

Standalone script, run by path with the vLLM env's interpreter (torch, tokenizers and
transformers live there, not in the project venv)::

    <vllm-env>/bin/python e2e/engines/_make_tiny_model.py OUT_DIR CONFIG_JSON

``CONFIG_JSON`` comes from ``tiny_model.MODEL_CONFIG``. Everything is deterministic: the
tokenizer is trained on the fixed corpus below and the weights come from a fixed torch
seed, so the same config always gives the same files. It imports nothing from the repo.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# Plain English prose written for this purpose: enough variety for a few hundred BPE merges.
CORPUS = """\
The operator watches one resource and keeps every child object in the shape the spec asks for.
A router sits in front of two engines and sends each request to one of them by weight.
When the new engine fails before the first byte, the request is retried once on the old one.
Consumers keep their endpoint while traffic moves from ten percent to half and then to all.
Each step waits for a pause, reads the error rate and the time to first token, and decides.
A bad step rolls back on its own, and the old engine stays ready until the very end.
Small models answer quickly; large models need many minutes to load their weights.
The cache is shared by every run, so the slow part happens once per version and machine.
Tokens stream as server sent events, one small chunk at a time, until the final done line.
Metrics count requests, errors, latency and the number of requests that are still running.
The quick brown fox jumps over the lazy dog while the cat sleeps near the warm window.
Numbers such as 0 1 2 3 4 5 6 7 8 9 10 100 1000 appear in logs, ports and durations.
Questions: what is the weather like today? How far is the station? Why is the sky blue?
Answers are short, polite and to the point; they end with a period and a new line.
"""

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header|>",
    "<|end_header|>",
    "<|eot|>",
    "<|pad|>",
]

# A Llama-3-like layout with our own special tokens. vLLM renders it through transformers
# for /v1/chat/completions; without a chat template that endpoint answers 400.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header|>{{ message['role'] }}<|end_header|>\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header|>assistant<|end_header|>\n{% endif %}"
)


ARCHITECTURE = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
)
"""The config's keys that are LlamaConfig's own, passed as they are."""


def build_tokenizer(vocab_size: int, max_len: int) -> Any:
    """Train a byte-level BPE tokenizer on the corpus and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # Every byte is in the vocabulary, so any input text can be tokenized.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines() * 4, trainer=trainer)
    bos = "<|begin_of_text|>"
    # Plain prompts (/v1/completions) get a BOS like Llama's; the chat template adds its own.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tok.token_to_id(bos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|eot|>",
        pad_token="<|pad|>",
        model_max_length=max_len,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer: Any, cfg: dict[str, Any]) -> Any:
    """Build the random-weight LlamaForCausalLM in bfloat16 from a fixed seed."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    if cfg["hidden_size"] // cfg["num_attention_heads"] < 64:
        # vLLM's CPU attention rejects small heads ("Unsupported CPU attention configuration").
        raise SystemExit("head dim (hidden_size / num_attention_heads) must be >= 64")
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    end = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    shape = {key: cfg[key] for key in ARCHITECTURE}
    config = LlamaConfig(
        **shape,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eot, end],
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(cfg["seed"])
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eot, end],
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def main(argv: list[str]) -> int:
    """Write tokenizer, model and a summary into ``argv[1]``."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    cfg: dict[str, Any] = json.loads(argv[2])
    start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg["tokenizer_vocab_size"], cfg["max_position_embeddings"])
    tokenizer.save_pretrained(out)
    model = build_model(tokenizer, cfg)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    summary = {
        "config": cfg,
        "vocab_size": len(tokenizer),
        "parameters": params,
        "generate_seconds": round(time.monotonic() - start, 2),
    }
    (out / "inferops-model.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
