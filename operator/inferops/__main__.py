"""`python -m inferops` / `inferops-operator`: runs the operator."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kopf

import inferops.handlers  # noqa: F401  (registers the handlers)
from inferops.builders.common import DEFAULT_IMAGES, Images
from inferops.builders.network_policy import NetworkPolicyConfig, Peer, parse_peers
from inferops.migration.sources import DEFAULT_SELECTOR


def _peers(text: str) -> tuple[Peer, ...]:
    try:
        return parse_peers(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _flag(variable: str) -> bool:
    """An environment variable's boolean, as the chart writes it ("true"); a value that is
    neither true nor false stops the operator rather than meaning off."""
    value = os.environ.get(variable, "").strip().lower()
    if value not in ("", "0", "1", "false", "true", "no", "yes"):
        sys.exit(f"{variable}={value!r}: expected true or false")
    return value in ("1", "true", "yes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with defaults from the environment (as the chart sets them);
    `network_policy_config` is the NetworkPolicy configuration, or None when off."""
    parser = argparse.ArgumentParser(prog="inferops-operator", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable; exact names); all namespaces when omitted",
    )
    parser.add_argument("--metrics-host", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=8080, help="0 disables metrics")
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8081/healthz", help="liveness endpoint URL"
    )
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("INFEROPS_PROMETHEUS_URL"),
        help="Prometheus the migration analysis queries (HTTP API base URL); without it the "
        "operator scrapes the router pods itself",
    )
    parser.add_argument(
        "--prometheus-selector",
        default=DEFAULT_SELECTOR,
        help="label matchers selecting one backend's router series in Prometheus, with "
        "{namespace} and {backend} placeholders (default: %(default)s)",
    )
    parser.add_argument(
        "--router-url",
        default=os.environ.get("INFEROPS_ROUTER_URL"),
        help="reach every router at this URL instead of its pods (an operator and a router "
        "run outside the cluster: development and the e2e tier)",
    )
    for engine, default in (
        ("vllm", DEFAULT_IMAGES.vllm),
        ("ollama", DEFAULT_IMAGES.ollama),
        ("router", DEFAULT_IMAGES.router),
    ):
        variable = f"INFEROPS_{engine.upper()}_IMAGE"
        parser.add_argument(
            f"--{engine}-image",
            default=os.environ.get(variable) or default,
            help=f"{engine} image of resources that name none (env {variable}; "
            "default: %(default)s)",
        )
    parser.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=_flag("INFEROPS_NETWORK_POLICY"),
        help="give every InferenceBackend a NetworkPolicy that lets its engines accept only "
        "its router pods (and --network-policy-metrics-from); without it, the policies built "
        "earlier are deleted (env INFEROPS_NETWORK_POLICY=true; default: %(default)s)",
    )
    parser.add_argument(
        "--network-policy-metrics-from",
        type=_peers,
        default=os.environ.get("INFEROPS_NETWORK_POLICY_METRICS_FROM", ""),
        help="the metrics scrapers the policy admits to vLLM's port (its /metrics): a JSON "
        "list of NetworkPolicy peers, each a namespaceSelector, a podSelector or both, as "
        "the chart's networkPolicy.metricsFrom (env INFEROPS_NETWORK_POLICY_METRICS_FROM; "
        "default: none)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.network_policy_metrics_from and not args.network_policy:
        parser.error("--network-policy-metrics-from needs --network-policy")
    args.network_policy_config = (
        NetworkPolicyConfig(metrics_from=args.network_policy_metrics_from)
        if args.network_policy
        else None
    )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
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
            network_policy=args.network_policy_config,
        ),
    )


if __name__ == "__main__":
    main()
