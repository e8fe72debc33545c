"""`python -m inferops` / `inferops-operator`: runs the operator."""

from __future__ import annotations

import argparse
import logging
import os

import kopf

import inferops.handlers  # noqa: F401  (registers the handlers)
from inferops.builders.common import DEFAULT_IMAGES, Images
from inferops.migration.sources import DEFAULT_SELECTOR


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="inferops-operator", description=__doc__)
    parser.add_argument(
        "-n", "--namespace", action="append", default=[],
        help="namespace to watch (repeatable; exact names); all namespaces when omitted",
    )  # fmt: skip
    parser.add_argument("--metrics-host", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=8080, help="0 disables metrics")
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL"
    )
    parser.add_argument(
        "--prometheus-url", default=os.environ.get("INFEROPS_PROMETHEUS_URL"),
        help="Prometheus the migration analysis queries (HTTP API base URL); without it the "
        "operator scrapes the router pods itself",
    )  # fmt: skip
    parser.add_argument(
        "--prometheus-selector", default=DEFAULT_SELECTOR,
        help="label matchers selecting one backend's router series in Prometheus, with "
        "{namespace} and {backend} placeholders (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--router-url", default=os.environ.get("INFEROPS_ROUTER_URL"),
        help="reach every router at this URL instead of its pods (an operator and a router "
        "run outside the cluster: development and the e2e tier)",
    )  # fmt: skip
    for engine, default in (("vllm", DEFAULT_IMAGES.vllm), ("ollama", DEFAULT_IMAGES.ollama),
                            ("router", DEFAULT_IMAGES.router)):  # fmt: skip
        variable = f"INFEROPS_{engine.upper()}_IMAGE"
        parser.add_argument(
            f"--{engine}-image", default=os.environ.get(variable) or default,
            help=f"{engine} image of resources that name none (env {variable}; "
            "default: %(default)s)",
        )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    kopf.configure(verbose=args.verbose)  # sets up logging for the whole process
    if not args.verbose:
        # One line per API call, or per pod status change, is debugging detail.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,
        liveness_endpoint=args.liveness,
        memo=kopf.Memo(
            namespaces=args.namespace,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            prometheus_url=args.prometheus_url,
            prometheus_selector=args.prometheus_selector,
            router_url=args.router_url,
            images=Images(vllm=args.vllm_image, ollama=args.ollama_image, router=args.router_image),
        ),
    )


if __name__ == "__main__":
    main()
