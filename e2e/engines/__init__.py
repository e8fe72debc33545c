"""Inference engines for the router's tests: real vLLM (CPU build) and real Ollama. The engine
stand-in and the fault proxy live in testsupport/standin.py.

- ``vllm_cpu.ensure_vllm_env()``: the cached vLLM CPU virtual environment;
- ``tiny_model.ensure_tiny_model()``: a generated tiny random-weight Llama;
- ``vllm_server.VLLMServer``: real vLLM as a local process;
- ``ollama.ensure_ollama()``: real Ollama, built once from its Go module;
- ``tiny_gguf.ensure_tiny_gguf()``: the tiny Llama as a GGUF with a Modelfile;
- ``ollama_server.OllamaServer``: real Ollama as a local process, serving that GGUF;
- ``python -m e2e.engines.check``: checks vLLM and the stand-in with the official openai client.

See docs/engines.md.
"""
