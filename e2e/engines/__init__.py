"""Inference engines for the router's tests: real vLLM (CPU build) and an Ollama stand-in.

- ``vllm_cpu.ensure_vllm_env()``: the cached vLLM CPU virtual environment;
- ``tiny_model.ensure_tiny_model()``: a generated tiny random-weight Llama;
- ``vllm_server.VLLMServer``: real vLLM as a local process;
- ``ollama_standin``: an Ollama stand-in (in process, in a thread, or as a process);
- ``python -m e2e.engines.check``: checks both with the official openai client.

See docs/engines.md.
"""
