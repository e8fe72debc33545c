"""The router benchmark: the inferops router against nginx and against no proxy at all, in front
of the same fixed-latency backend stand-ins, on one pinned core each (see bench/README.md)."""
