"""The migration engine: per-consumer canary from Ollama to vLLM."""
