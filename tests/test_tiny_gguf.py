"""The pure parts of the GGUF writer for real Ollama (e2e/engines/tiny_gguf.py): the q/k head
permutation, bfloat16 reading and the Modelfile. The whole conversion is checked end to end by
e2e/test_engines_agree.py (vLLM and Ollama give the same greedy answers)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from e2e.engines.tiny_gguf import TEMPLATE, modelfile, permute_heads, read_safetensors


def test_permute_heads_interleaves_the_two_rotary_halves_of_each_head() -> None:
    # Two heads of 4 rows each: HF keeps each head's rotary pairs as (first half, second
    # half), GGML wants them interleaved: rows 0,2,1,3 of each head.
    weight = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    permuted = permute_heads(weight, heads=2)
    assert [int(row[0]) // 3 for row in permuted] == [0, 2, 1, 3, 4, 6, 5, 7]
    assert permuted.shape == weight.shape


def test_read_safetensors_widens_bfloat16_exactly(tmp_path: Path) -> None:
    values = np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bf16)
    assert read_safetensors(path)["w"].tolist() == [[1.0, -2.5], [3.140625, 0.0]]


def test_read_safetensors_names_an_unsupported_dtype(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\x00")
    with pytest.raises(ValueError, match="tensor w has unsupported dtype I8"):
        read_safetensors(path)


def test_modelfile_has_the_template_without_bos_and_vllms_sampling_defaults() -> None:
    text = modelfile(Path("/models/x/model.gguf"))
    assert text.startswith("FROM /models/x/model.gguf\n")
    assert f'TEMPLATE """{TEMPLATE}"""' in text
    assert "<|begin_of_text|>" not in TEMPLATE  # llama.cpp adds the BOS itself
    for line in (
        'PARAMETER stop "<|eot|>"',
        'PARAMETER stop "<|end_of_text|>"',
        "PARAMETER repeat_penalty 1",
        "PARAMETER num_thread 1",
    ):
        assert line in text.splitlines()
