"""Command line: ``python -m e2e.localcluster up|down|status|build|env|restart``.

User-facing results (how to use the cluster, the status table, the ``export`` lines)
go to stdout; progress and diagnostics go to stderr through ``logging``, so
``eval "$(python -m e2e.localcluster env)"`` stays clean.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from . import build, nodes
from .cluster import COMPONENTS, Cluster, ClusterError, format_status
from .pki import PKIError

log = logging.getLogger("e2e.localcluster")


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The same options before and after the subcommand; after it they default to
    # SUPPRESS so they do not overwrite a value given before it.
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=argparse.SUPPRESS if suppress else None,
        help="cluster state directory (default: $INFEROPS_CLUSTER_DIR or <checkout>/.cluster)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="debug logging",
    )


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)

    parser = argparse.ArgumentParser(
        prog="python -m e2e.localcluster",
        description=(
            "Local Kubernetes test cluster: real control plane on 127.0.0.1, kwok-simulated nodes."
        ),
    )
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)

    p_build = sub.add_parser(
        "build", parents=[common], help="build and cache the binaries (no-op when cached)"
    )
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")

    default = nodes.NodeLayout.from_env()
    p_up = sub.add_parser(
        "up", parents=[common], help="start the cluster (builds binaries on first use)"
    )
    for flag, what, env in (
        ("--gpu-nodes", "GPU nodes", nodes.ENV_GPU_NODES),
        ("--gpus-per-node", "GPUs per GPU node", nodes.ENV_GPUS_PER_NODE),
        ("--cpu-nodes", "CPU-only nodes", nodes.ENV_CPU_NODES),
    ):
        now = getattr(default, flag[2:].replace("-", "_"))
        p_up.add_argument(flag, type=int, default=now, help=f"{what} (${env}, now {now})")
    p_up.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)"
    )

    p_down = sub.add_parser(
        "down", parents=[common], help="stop all cluster processes and remove the state"
    )
    p_down.add_argument(
        "--keep-state", action="store_true", help="keep PKI, etcd data and logs for a later up"
    )

    sub.add_parser(
        "status",
        parents=[common],
        help="show which components run (exit 0 only if all are healthy)",
    )
    sub.add_parser("env", parents=[common], help="print export lines for KUBECONFIG and PATH")
    p_restart = sub.add_parser(
        "restart",
        parents=[common],
        help="stop one component and start it again, same arguments (fault tests)",
    )
    p_restart.add_argument("component", choices=COMPONENTS)
    p_restart.add_argument(
        "--down", type=float, default=0.0, metavar="SECONDS", help="stay stopped this long"
    )
    return parser


def _usage_lines(cluster: Cluster) -> str:
    quoted_kc = shlex.quote(str(cluster.kubeconfig))
    quoted_bin = shlex.quote(str(cluster.bin_dir))
    return "\n".join(
        [
            f"  export KUBECONFIG={quoted_kc}",
            f"  export PATH={quoted_bin}:$PATH",
            '  # or: eval "$(python -m e2e.localcluster env)"',
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s localcluster: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return _run(args)
    except (ClusterError, build.BuildError, PKIError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`; not an error of the cluster.
        return 141


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        layout = nodes.NodeLayout(
            gpu_nodes=args.gpu_nodes, gpus_per_node=args.gpus_per_node, cpu_nodes=args.cpu_nodes
        )
        cluster = Cluster(state_dir=args.state_dir, layout=layout, startup_timeout=args.timeout)
    else:
        cluster = Cluster.default(state_dir=args.state_dir)

    if args.command == "build":
        started = time.monotonic()
        tools = cluster.build(force=args.force)
        log.info("binaries ready after %.0fs", time.monotonic() - started)
        print(f"binaries in {tools.bin_dir}:")
        for name in sorted(os.listdir(tools.bin_dir)):
            print(f"  {name} -> {os.path.realpath(tools.bin_dir / name)}")
        return 0

    if args.command == "up":
        started = time.monotonic()
        fresh = cluster.up()
        layout = cluster.recorded_layout or cluster.layout
        how = f"ready after {time.monotonic() - started:.1f}s" if fresh else "already running"
        print(
            f"cluster {how}: {cluster.node_summary()} ({layout.gpu_nodes} GPU node(s) with "
            f"{layout.gpus_per_node} nvidia.com/gpu each, {layout.cpu_nodes} CPU node(s))"
        )
        print(f"server: {cluster.server}")
        print(f"state dir: {cluster.state_dir}")
        print("use it with:")
        print(_usage_lines(cluster))
        return 0

    if args.command == "down":
        cluster.down(keep_state=args.keep_state)
        kept = " (state kept)" if args.keep_state else ""
        print(f"cluster in {cluster.state_dir} stopped{kept}")
        return 0

    if args.command == "status":
        statuses = cluster.status()
        print(f"state dir: {cluster.state_dir}")
        print(format_status(statuses))
        running = [s for s in statuses if s.running]
        if running and any(s.name == "kube-apiserver" and s.healthy for s in statuses):
            print(cluster.node_summary())
            print(f"kubeconfig: {cluster.kubeconfig}")
        if all(s.running and s.healthy for s in statuses):
            return 0
        # 3 = not running at all (as systemctl status), 1 = partially up or unhealthy.
        return 3 if not running else 1

    if args.command == "restart":
        seconds = cluster.restart(args.component, args.down)
        print(f"{args.component} restarted, healthy again after {seconds:.1f}s")
        return 0

    if args.command == "env":
        if build.missing_components():
            log.warning("binaries are not built yet; run `python -m e2e.localcluster build`")
        print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
        print(f"export PATH={shlex.quote(str(cluster.bin_dir))}:$PATH")
        return 0

    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
