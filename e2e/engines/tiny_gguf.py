"""The generated tiny Llama as a GGUF with a Modelfile, so real Ollama serves what vLLM serves.

``ensure_tiny_gguf()`` converts the very files vLLM loads (``tiny_model.ensure_tiny_model``:
``model.safetensors``, ``config.json``, ``tokenizer.json``) into
``<cache>/models/<tiny model dir>-gguf-<hash>/`` holding ``model.gguf`` and ``Modelfile``.
The conversion is the one checked in DESIGN.md section 3, with PyPI's ``gguf`` and numpy:

- weights stay f32 (bfloat16 widened exactly; the file is under 2 MB);
- Llama's q and k projections get llama.cpp's head permutation (HF stores the two halves
  of each head's rotary dimensions apart, GGML's rope wants them interleaved);
- the tokenizer goes in as BPE vocabulary + merges with pre-tokenizer ``gpt2`` (the tiny
  tokenizer is plain ByteLevel with GPT-2's split regex); its special tokens are CONTROL.

Ollama ignores the GGUF's jinja chat template, so the Modelfile carries ``TEMPLATE``, a Go
template rendering exactly what the tokenizer's chat template renders, minus the BOS that
llama.cpp adds itself; ``PARAMETER stop`` for the end-of-turn tokens; ``num_thread 1`` (no
spin-waiting threads on a shared 2-core machine); ``num_ctx`` equal to vLLM's max model
length in the tests; ``num_predict`` as a default cap, since random weights may never emit
an end token; ``repeat_penalty 1`` (no penalty), vLLM's default, where Ollama's own default
1.1 would make its greedy answers differ from vLLM's as soon as a token repeats.

The hash covers this file's source and the model directory's name (itself a hash of the
model's config and generator), so any change makes a new directory.

CLI: ``python -m e2e.engines.tiny_gguf`` prints the directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from ._common import cache_root, once, progress
from .tiny_model import ensure_tiny_model

CONTEXT_LENGTH = 256
"""Ollama's ``num_ctx``: the ``--max-model-len`` the tests give vLLM (VLLMServer's default)."""

NUM_PREDICT = 128
"""Default answer length cap when a request sets none (random weights rarely stop)."""

BOS = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
END_OF_TURN = "<|eot|>"

# The tokenizer's chat template (``_make_tiny_model.CHAT_TEMPLATE``) as a Go template: one
# header, newline, content and <|eot|> per message, then the assistant header. No BOS.
TEMPLATE = (
    "{{- range .Messages }}<|start_header|>{{ .Role }}<|end_header|>\n"
    "{{ .Content }}<|eot|>"
    "{{- end }}<|start_header|>assistant<|end_header|>\n"
)


def _source_hash(model: Path) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(model.name.encode())
    return digest.hexdigest()[:12]


def gguf_dir(model: Path | None = None) -> Path:
    """Return where the GGUF of ``model`` (default: the tiny model) lives."""
    model = model or ensure_tiny_model()
    return cache_root() / "models" / f"{model.name}-gguf-{_source_hash(model)}"


def ensure_tiny_gguf(model: Path | None = None) -> Path:
    """Write ``model.gguf`` and ``Modelfile`` once; return their directory."""
    source = model or ensure_tiny_model()
    target = gguf_dir(source)

    def write() -> None:
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_gguf(source, tmp / "model.gguf")
        # FROM names the final path: the directory is renamed below.
        (tmp / "Modelfile").write_text(modelfile(target / "model.gguf"))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        progress(f"GGUF of {source.name} ready: {target}")

    once((target / "Modelfile").is_file, target.name, write)
    return target


def modelfile(gguf_path: Path) -> str:
    """Return the Modelfile registering ``gguf_path`` with our template and parameters."""
    if '"""' in TEMPLATE:
        raise ValueError("TEMPLATE must not contain triple quotes (Modelfile quoting)")
    return (
        f"FROM {gguf_path}\n"
        f'TEMPLATE """{TEMPLATE}"""\n'
        f'PARAMETER stop "{END_OF_TURN}"\n'
        f'PARAMETER stop "{END_OF_TEXT}"\n'
        "PARAMETER repeat_penalty 1\n"
        "PARAMETER num_thread 1\n"
        f"PARAMETER num_ctx {CONTEXT_LENGTH}\n"
        f"PARAMETER num_predict {NUM_PREDICT}\n"
    )


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Read every tensor of a safetensors file as float32 (bf16, f16 and f32 supported)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        raw = data[base + start : base + end]
        dtype = meta["dtype"]
        if dtype == "BF16":
            # bfloat16 is the top half of a float32: widening is exact.
            values = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype == "F16":
            values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "F32":
            values = np.frombuffer(raw, dtype="<f4").copy()
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        tensors[name] = values.reshape(meta["shape"])
    return tensors


def permute_heads(weight: np.ndarray[Any, Any], heads: int) -> np.ndarray[Any, Any]:
    """Reorder a q/k projection's rows from HF's rotary layout to GGML's (per head: the two
    halves of the rotary dimensions interleaved instead of one after the other)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_gguf(model: Path, out: Path) -> None:
    """Convert the HF-format Llama in ``model`` to a GGUF file at ``out``."""
    config = json.loads((model / "config.json").read_text())
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tensors = read_safetensors(model / "model.safetensors")
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    hidden = config["hidden_size"]

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(model.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, tokenizer, config["vocab_size"])

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(config["num_hidden_layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{layer}.{hf}.weight"] = f"blk.{layer}.{gg}.weight"
    missing = sorted(set(names) - set(tensors))
    unknown = sorted(set(tensors) - set(names))
    if missing or unknown:
        raise ValueError(f"{model}: tensors missing {missing}, not understood {unknown}")
    for hf_name, gguf_name in names.items():
        weight = tensors[hf_name]
        if gguf_name.endswith("attn_q.weight"):
            weight = permute_heads(weight, heads)
        elif gguf_name.endswith("attn_k.weight"):
            weight = permute_heads(weight, kv_heads)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weight, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer: gguf.GGUFWriter, tokenizer: dict[str, Any], vocab_size: int) -> None:
    bpe = tokenizer["model"]
    if bpe.get("type") != "BPE":
        raise ValueError(f"tokenizer model is {bpe.get('type')}, only BPE is supported")
    by_id: dict[int, str] = {int(i): tok for tok, i in bpe["vocab"].items()}
    special: set[int] = set()
    for added in tokenizer.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        if added.get("special"):
            special.add(int(added["id"]))
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) > vocab_size:
        raise ValueError(f"token ids are not 0..{len(by_id) - 1} within vocab_size {vocab_size}")
    tokens = [by_id[i] for i in range(len(by_id))]
    types = [
        gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
        for i in range(len(tokens))
    ]
    # Rows of the embedding beyond the tokenizer (none for the tiny model) stay unused.
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    # tokenizers writes merges as "a b" strings (older) or ["a", "b"] pairs (newer).
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    ids = {tok: i for i, tok in enumerate(tokens)}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(ids[BOS])
    # Both end tokens are end-of-generation for llama.cpp, as both are eos for vLLM.
    writer.add_eos_token_id(ids[END_OF_TEXT])
    writer.add_eot_token_id(ids[END_OF_TURN])
    writer.add_pad_token_id(ids["<|pad|>"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def main() -> int:
    """CLI entry point: write the GGUF and Modelfile if needed and print their directory."""
    path = ensure_tiny_gguf()
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
