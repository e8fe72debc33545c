"""`spec.vllm.extraArgs` examples: every flag the operator manages in every spelling vLLM 0.32
reads (exact, `=value`, `_` for `-`, a unique or ambiguous prefix, a short alias, `.key`),
items holding several words, and examples that must be accepted.

Shared by the unit test of the model (tests/test_vllm_args.py), the test that runs vLLM's own
parser on each (e2e/test_vllm_args.py) and the API server's dry run of them. Values differ
from the ones the operator passes, so a spelling that reaches vLLM shows in what it parses.
"""

from __future__ import annotations

from typing import NamedTuple


class Refused(NamedTuple):
    args: list[str]
    position: int
    """The item the message names (`spec.vllm.extraArgs[position]`)."""
    words: str
    """In the message: the flag vLLM reads, or what is wrong."""
    fix: str
    """In the message: the field to use, or the fix."""


TP = "set spec.vllm.tensorParallelSize instead"
GPU = "set spec.vllm.gpuMemoryUtilization instead"
LEN = "set spec.vllm.maxModelLen instead"
NAME = "set spec.model instead"
MODEL = "set spec.vllm.model instead"
PORT = "remove it: vLLM serves on port 8000"
HOST = "remove it: vLLM listens on all pod addresses"
DTYPE = "set spec.vllm.dtype instead"
CACHE = "set spec.vllm.cache instead"
WORDS = "holds several words"

REFUSED: list[Refused] = [
    # --model: its prefixes are shared with --model-impl and others (ambiguous in vLLM).
    Refused(["--model", "other/model"], 0, "--model is managed", MODEL),
    Refused(["--model=other/model"], 0, "--model is managed", MODEL),
    Refused(["--model.revision=main"], 0, "--model", MODEL),
    Refused(["--mod=other/model"], 0, "prefix of several vLLM flags", "--model"),
    Refused(["--mode", "other/model"], 0, "prefix of several vLLM flags", "--model"),
    # --served-model-name (takes one or more values)
    Refused(["--served-model-name", "x"], 0, "--served-model-name is managed", NAME),
    Refused(["--served-model-name=x"], 0, "--served-model-name is managed", NAME),
    Refused(["--served_model_name", "x"], 0, "reads it as --served-model-name", NAME),
    Refused(["--served_model_name=x"], 0, "reads it as --served-model-name", NAME),
    Refused(["--served-model=x"], 0, "reads it as --served-model-name", NAME),
    Refused(["--served_model", "x"], 0, "reads it as --served-model-name", NAME),
    Refused(["--ser", "x"], 0, "reads it as --served-model-name", NAME),
    Refused(["--served-model-name.a=b"], 0, "reads it as --served-model-name", NAME),
    # --host
    Refused(["--host", "127.0.0.2"], 0, "--host is managed", HOST),
    Refused(["--host=127.0.0.2"], 0, "--host is managed", HOST),
    Refused(["--hos=127.0.0.2"], 0, "reads it as --host", HOST),
    Refused(["--ho", "127.0.0.2"], 0, "reads it as --host", HOST),
    # --port
    Refused(["--port", "9000"], 0, "--port is managed", PORT),
    Refused(["--port=9000"], 0, "--port is managed", PORT),
    Refused(["--por=9000"], 0, "reads it as --port", PORT),
    Refused(["--po", "9000"], 0, "prefix of several vLLM flags", "--port"),
    # --tensor-parallel-size, -tp
    Refused(["--tensor-parallel-size", "2"], 0, "--tensor-parallel-size is managed", TP),
    Refused(["--tensor-parallel-size=2"], 0, "--tensor-parallel-size is managed", TP),
    Refused(["--tensor_parallel_size=2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["--tensor_parallel_size", "2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["--tensor-parallel=2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["--tensor_par=2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["--te", "2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["--tensor-parallel-size.x=2"], 0, "reads it as --tensor-parallel-size", TP),
    Refused(["-tp", "2"], 0, "-tp is managed", TP),
    Refused(["-tp=2"], 0, "-tp is managed", TP),
    Refused(["-t", "2"], 0, "reads it as -tp", TP),
    # --gpu-memory-utilization and its other name, --device-memory-utilization
    Refused(["--gpu-memory-utilization", "0.5"], 0, "--gpu-memory-utilization is", GPU),
    Refused(["--gpu_memory_utilization", "0.5"], 0, "as --gpu-memory-utilization", GPU),
    Refused(["--gpu_memory_utilization=0.5"], 0, "as --gpu-memory-utilization", GPU),
    Refused(["--gpu-mem=0.5"], 0, "reads it as --gpu-memory-utilization", GPU),
    Refused(["--gp", "0.5"], 0, "reads it as --gpu-memory-utilization", GPU),
    Refused(["--device-memory-utilization=0.5"], 0, "--device-memory-utilization", GPU),
    Refused(["--device_memory=0.5"], 0, "as --device-memory-utilization", GPU),
    # --max-model-len
    Refused(["--max-model-len", "100"], 0, "--max-model-len is managed", LEN),
    Refused(["--max-model-len=100"], 0, "--max-model-len is managed", LEN),
    Refused(["--max_model_len=100"], 0, "reads it as --max-model-len", LEN),
    Refused(["--max-model=100"], 0, "reads it as --max-model-len", LEN),
    Refused(["--max_model", "100"], 0, "reads it as --max-model-len", LEN),
    Refused(["--max-m=100"], 0, "reads it as --max-model-len", LEN),
    Refused(["--max", "100"], 0, "prefix of several vLLM flags", "--max-model-len"),
    # --dtype
    Refused(["--dtype", "half"], 0, "--dtype is managed", DTYPE),
    Refused(["--dtype=half"], 0, "--dtype is managed", DTYPE),
    Refused(["--dt=half"], 0, "reads it as --dtype", DTYPE),
    # --download-dir: the operator keeps model files on the cache volume (HF_HOME)
    Refused(["--download-dir", "/tmp/models"], 0, "--download-dir is managed", CACHE),
    Refused(["--download_dir=/tmp/models"], 0, "reads it as --download-dir", CACHE),
    Refused(["--down=/tmp/models"], 0, "reads it as --download-dir", CACHE),
    Refused(["--do", "/tmp/models"], 0, "reads it as --download-dir", CACHE),
    # Several words in one item: vLLM reads the item as one (positional) argument.
    Refused(["--port 9000"], 0, WORDS, '["--port", "9000"]'),
    Refused(["-tp 2"], 0, WORDS, '["-tp", "2"]'),
    Refused(["--max-num-seqs 64"], 0, WORDS, '["--max-num-seqs", "64"]'),
    Refused(["--enforce-eager --enable-prefix-caching"], 0, WORDS, "one item per word"),
    # The message names the item, wherever it stands.
    Refused(["--enable-prefix-caching", "--port=9000"], 1, "--port is managed", PORT),
    Refused(["--max-num-seqs", "8", "--max_model=64"], 2, "as --max-model-len", LEN),
]  # fmt: skip

ACCEPTED: list[list[str]] = [
    ["--enable-prefix-caching"],
    ["--max-num-seqs", "64"],
    ["--max-num-seqs=64"],
    ["--max_num_seqs=64"],
    ["--model-impl=vllm"],
    ["--model-impl", "vllm"],
    ["--quantization", "fp8"],
    ["-q", "fp8"],
    ["--trust-remote-code"],
    ["--enforce-eager"],
    ["--kv-cache-dtype=fp8"],
    ["--api-key", "secret"],
    ["--seed", "-1"],
    ["-O3"],
    ["--compilation-config.mode=3"],
    ["--chat-template", "{% for m in messages %}{{ m.content }}{% endfor %}"],
    ["--override-generation-config", '{"temperature": 0.5}'],
    ["--enable-prefix-caching", "--max-num-batched-tokens", "4096", "--enforce-eager"],
]
