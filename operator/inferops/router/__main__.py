"""`python -m inferops.router`: runs the router until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
from collections.abc import Callable
from pathlib import Path

from inferops.api.routing import ROUTES_KEY
from inferops.router.server import RouterServer
from inferops.router.sources import FileSource, TableSource
from inferops.router.state import RouterState

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inferops.router", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--table-file", type=Path, help="routing table JSON file, re-read when it changes"
    )
    source.add_argument(
        "--configmap",
        metavar="[NS/]NAME",
        help="watch this ConfigMap (namespace defaults to the pod's own)",
    )
    source.add_argument("--worker", type=int, metavar="INDEX", help=argparse.SUPPRESS)
    # (--worker: started by a supervisor, which sends the table through stdin.)
    parser.add_argument("--configmap-key", default=ROUTES_KEY)
    parser.add_argument(
        "--workers",
        type=positive,
        default=1,
        help="router processes sharing the port (SO_REUSEPORT), one core each; with more than "
        "one, this process supervises them and watches the routing table once for all",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="with --workers: where workers answer each other's metrics requests (Unix "
        "sockets); default a new directory under $TMPDIR",
    )
    parser.add_argument(
        "--engine-url",
        action="append",
        default=[],
        metavar="ENGINE=URL",
        help="use URL for ENGINE (vllm, ollama or embeddings) instead of the table's: for a "
        "router run "
        "outside the cluster, where the engines' Service names do not resolve",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=25.0,
        help="on SIGTERM, how long requests in flight may take to finish",
    )
    parser.add_argument(
        "--upstream-connections",
        type=int,
        default=4096,
        help="limit of open connections to the engines (0: none)",
    )
    parser.add_argument("--upstream-keepalive-seconds", type=float, default=4.0)
    parser.add_argument(
        "--trust-consumer-header",
        action="store_true",
        help="honour X-Inferops-Consumer, which names the consumer instead of Host: lets any "
        "caller act as any consumer, so only for tests and benchmarks (without it, a request "
        "carrying the header is refused with 400)",
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop implementation: uvloop (libuv, the default: less CPU per request and "
        "per relayed chunk) or asyncio's own",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least 1")
    return number


def engine_urls(values: list[str]) -> dict[str, str]:
    urls = {}
    for value in values:
        engine, sep, url = value.partition("=")
        if not sep or engine not in ("vllm", "ollama", "embeddings"):
            raise SystemExit(
                f"--engine-url {value!r}: expected vllm=URL, ollama=URL or embeddings=URL"
            )
        urls[engine] = url
    return urls


def make_source(args: argparse.Namespace) -> TableSource:
    if args.table_file:
        return FileSource(args.table_file)
    # Imported here: the Kubernetes client is a sizeable import a file-fed router never uses.
    from inferops.router.configmap import ConfigMapSource

    namespace, _, name = str(args.configmap).rpartition("/")
    if not namespace:
        try:
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except OSError:
            raise SystemExit("--configmap needs NAMESPACE/NAME outside a pod") from None
    return ConfigMapSource(namespace, name, key=args.configmap_key)


async def run(args: argparse.Namespace) -> None:
    if args.worker is None and args.workers > 1:
        # Imported here: a single router does not need it.
        from inferops.router.workers import supervise

        await supervise(args, make_source(args))
    else:
        await serve(args)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    state = RouterState(
        engine_urls=engine_urls(args.engine_url),
        trust_consumer_header=args.trust_consumer_header,
    )
    source = make_source(args) if args.worker is None else worker_source(args, state, stop)
    server = RouterServer(
        state,
        source,
        host=args.host,
        port=args.port,
        reuse_port=args.worker is not None,
        grace_seconds=args.grace_seconds,
        access_log=args.access_log,
        connection_limit=args.upstream_connections,
        keepalive_seconds=args.upstream_keepalive_seconds,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if state.pod is not None:
        await state.pod.start()
    await server.start()
    await stop.wait()
    await server.stop()
    if state.pod is not None:
        await state.pod.stop()


def worker_source(args: argparse.Namespace, state: RouterState, stop: asyncio.Event) -> TableSource:
    """A worker's table comes from its supervisor; its metrics are the pod's."""
    from inferops.router.podmetrics import PodMetrics
    from inferops.router.tablepipe import PipeSource

    if args.run_dir is None:
        raise SystemExit("--worker needs --run-dir")
    pod = state.pod = PodMetrics(state.metrics, args.run_dir, args.worker, args.workers)

    def restarts(n: int) -> None:
        pod.restarts = n

    return PipeSource(on_eof=stop.set, on_restarts=restarts)


def raise_open_file_limit() -> None:
    """Every stream holds two sockets (client and engine): use the hard limit, not the often
    much lower soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raise_open_file_limit()
    # A worker's lines say which worker wrote them (they share the pod's log).
    who = "" if args.worker is None else f"[worker {args.worker}] "
    logging.basicConfig(
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s",
    )
    if args.log_level.upper() != "DEBUG":
        # One line per watch request to the API server is debugging detail.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(run(args))


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop constructor for `--loop` (None: asyncio's default)."""
    if name == "asyncio":
        return None
    import uvloop  # imported here: `--loop asyncio` must work without it

    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
