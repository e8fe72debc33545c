"""The data-plane router: one per InferenceBackend, in front of its vLLM and Ollama engines.

Each consumer reaches the router through its own Service; the router tells consumers apart by
the Host header, sends `weight` percent of a consumer's requests to vLLM and the rest to
Ollama, falls back from vLLM to Ollama on failures that happened before any byte reached the
client, serves both the OpenAI API and Ollama's native API, and measures every request per
consumer and engine. Its routing table comes from the operator (a ConfigMap) and is swapped
without a restart.
"""
