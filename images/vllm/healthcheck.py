#!/usr/bin/env python3
"""The images' HEALTHCHECK: exit 0 when vLLM's ``/health`` on the API port answers 200.

The port is the one the entrypoint gives vLLM (``VLLM_API_PORT``, default 8000): vLLM serves
``/v1/*``, ``/health`` and ``/metrics`` on that one port, there is no separate metrics port.
A port passed as a command-line ``--port`` instead is not seen here (set ``VLLM_API_PORT``).
Kubernetes ignores an image's HEALTHCHECK: pods use the probes the operator writes.
Standard library only; Python is in both base images, curl is not guaranteed.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from entrypoint import ConfigError, api_port  # copied beside this file in the images


def main() -> int:
    try:
        port = api_port(os.environ)
    except ConfigError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
