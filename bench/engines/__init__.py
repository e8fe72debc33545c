"""The engine benchmark: real vLLM (CPU build) against real Ollama on the same tiny model."""
