"""`spec.vllm.extraArgs` examples: every flag the operator manages in every spelling vLLM 0.32
reads (exact, `=value`, `_` for `-`, a unique or ambiguous prefix, a short alias, `.key`),
items holding several words, stray values, and examples that must be accepted.

Shared by the unit test of the model (tests/test_vllm_args.py), the test that runs vLLM's own
parser on each (e2e/test_vllm_args.py) and the API server's dry run of them. Values differ
from the ones the operator passes, so a spelling that reaches vLLM shows in what it parses.
"""

from __future__ import annotations

from typing import NamedTuple


class Refused(NamedTuple):
    args: list[str]
    index: int
    """The item the message names (`spec.vllm.extraArgs[index]`)."""
    words: str
    """In the message: the flag vLLM reads, or what is wrong."""
    fix: str
    """In the message: the field to use, or the fix."""
    cel: bool
    """The API server refuses it too (it needs no knowledge of the item before it)."""


TP = "set spec.vllm.tensorParallelSize instead"
GPU = "set spec.vllm.gpuMemoryUtilization instead"
LEN = "set spec.vllm.maxModelLen instead"
NAME = "set spec.model instead"
MODEL = "set spec.vllm.model instead"
PORT = "remove it: vLLM serves on port 8000"
HOST = "remove it: vLLM listens on all pod addresses"
DTYPE = "set spec.vllm.dtype instead"
CACHE = "set spec.vllm.cache instead"
STRAY = "is not the value of a flag"
WORDS = "holds several words"

REFUSED: list[Refused] = [
    # --model: its prefixes are shared with --model-impl and others (ambiguous in vLLM).
    Refused(["--model", "other/model"], 0, "--model is managed", MODEL, True),
    Refused(["--model=other/model"], 0, "--model is managed", MODEL, True),
    Refused(["--model.revision=main"], 0, "--model", MODEL, True),
    Refused(["--mod=other/model"], 0, "prefix of several vLLM flags", "--model", True),
    Refused(["--mode", "other/model"], 0, "prefix of several vLLM flags", "--model", True),
    # --served-model-name (takes one or more values)
    Refused(["--served-model-name", "x"], 0, "--served-model-name is managed", NAME, True),
    Refused(["--served-model-name=x"], 0, "--served-model-name is managed", NAME, True),
    Refused(["--served_model_name", "x"], 0, "reads it as --served-model-name", NAME, True),
    Refused(["--served_model_name=x"], 0, "reads it as --served-model-name", NAME, True),
    Refused(["--served-model=x"], 0, "reads it as --served-model-name", NAME, True),
    Refused(["--served_model", "x"], 0, "reads it as --served-model-name", NAME, True),
    Refused(["--ser", "x"], 0, "reads it as --served-model-name", NAME, True),
    Refused(["--served-model-name.a=b"], 0, "reads it as --served-model-name", NAME, True),
    # --host
    Refused(["--host", "127.0.0.2"], 0, "--host is managed", HOST, True),
    Refused(["--host=127.0.0.2"], 0, "--host is managed", HOST, True),
    Refused(["--hos=127.0.0.2"], 0, "reads it as --host", HOST, True),
    Refused(["--ho", "127.0.0.2"], 0, "reads it as --host", HOST, True),
    # --port
    Refused(["--port", "9000"], 0, "--port is managed", PORT, True),
    Refused(["--port=9000"], 0, "--port is managed", PORT, True),
    Refused(["--por=9000"], 0, "reads it as --port", PORT, True),
    Refused(["--po", "9000"], 0, "prefix of several vLLM flags", "--port", True),
    # --tensor-parallel-size, -tp
    Refused(["--tensor-parallel-size", "2"], 0, "--tensor-parallel-size is managed", TP, True),
    Refused(["--tensor-parallel-size=2"], 0, "--tensor-parallel-size is managed", TP, True),
    Refused(["--tensor_parallel_size=2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["--tensor_parallel_size", "2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["--tensor-parallel=2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["--tensor_par=2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["--te", "2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["--tensor-parallel-size.x=2"], 0, "reads it as --tensor-parallel-size", TP, True),
    Refused(["-tp", "2"], 0, "-tp is managed", TP, True),
    Refused(["-tp=2"], 0, "-tp is managed", TP, True),
    Refused(["-t", "2"], 0, "reads it as -tp", TP, True),
    # --gpu-memory-utilization and its other name, --device-memory-utilization
    Refused(["--gpu-memory-utilization", "0.5"], 0, "--gpu-memory-utilization is", GPU, True),
    Refused(["--gpu_memory_utilization", "0.5"], 0, "as --gpu-memory-utilization", GPU, True),
    Refused(["--gpu_memory_utilization=0.5"], 0, "as --gpu-memory-utilization", GPU, True),
    Refused(["--gpu-mem=0.5"], 0, "reads it as --gpu-memory-utilization", GPU, True),
    Refused(["--gp", "0.5"], 0, "reads it as --gpu-memory-utilization", GPU, True),
    Refused(["--device-memory-utilization=0.5"], 0, "--device-memory-utilization", GPU, True),
    Refused(["--device_memory=0.5"], 0, "as --device-memory-utilization", GPU, True),
    # --max-model-len
    Refused(["--max-model-len", "100"], 0, "--max-model-len is managed", LEN, True),
    Refused(["--max-model-len=100"], 0, "--max-model-len is managed", LEN, True),
    Refused(["--max_model_len=100"], 0, "reads it as --max-model-len", LEN, True),
    Refused(["--max-model=100"], 0, "reads it as --max-model-len", LEN, True),
    Refused(["--max_model", "100"], 0, "reads it as --max-model-len", LEN, True),
    Refused(["--max-m=100"], 0, "reads it as --max-model-len", LEN, True),
    Refused(["--max", "100"], 0, "prefix of several vLLM flags", "--max-model-len", True),
    # --dtype
    Refused(["--dtype", "half"], 0, "--dtype is managed", DTYPE, True),
    Refused(["--dtype=half"], 0, "--dtype is managed", DTYPE, True),
    Refused(["--dt=half"], 0, "reads it as --dtype", DTYPE, True),
    # --download-dir: the operator keeps model files on the cache volume (HF_HOME)
    Refused(["--download-dir", "/tmp/models"], 0, "--download-dir is managed", CACHE, True),
    Refused(["--download_dir=/tmp/models"], 0, "reads it as --download-dir", CACHE, True),
    Refused(["--down=/tmp/models"], 0, "reads it as --download-dir", CACHE, True),
    Refused(["--do", "/tmp/models"], 0, "reads it as --download-dir", CACHE, True),
    # Several words in one item: vLLM reads the item as one (positional) argument.
    Refused(["--port 9000"], 0, WORDS, '["--port", "9000"]', True),
    Refused(["-tp 2"], 0, WORDS, '["-tp", "2"]', True),
    Refused(["--max-num-seqs 64"], 0, WORDS, '["--max-num-seqs", "64"]', True),
    Refused(["--enforce-eager --enable-prefix-caching"], 0, WORDS, "one item per word", True),
    # A value no flag takes: the model to serve (api_server) or an unrecognized argument.
    Refused(["other/model"], 0, STRAY, "spec.vllm.model", False),
    Refused(["--enforce-eager", "true"], 1, STRAY, "remove it", False),
    Refused(["--max-num-seqs", "4", "5"], 2, STRAY, "remove it", False),
    Refused(["--max-num-seqs=4", "5"], 1, STRAY, "remove it", False),
    Refused(["--", "other/model"], 1, STRAY, "remove it", False),
    # The message names the item, wherever it stands.
    Refused(["--enable-prefix-caching", "--port=9000"], 1, "--port is managed", PORT, True),
    Refused(["--max-num-seqs", "8", "--max_model=64"], 2, "as --max-model-len", LEN, True),
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
