"""The supervisor of `--workers N` (N > 1): N router processes on one port, one table source.

One Python process uses one core; the router's data path is CPU-bound, so a pod with more
CPU runs several. Each worker (`python -m inferops.router --worker I ...`) binds the port
itself with SO_REUSEPORT, so the kernel spreads incoming connections across them with no
process in between. The supervisor serves no requests: it runs the table source once for the
pod (one ConfigMap watch, whatever N) and feeds the workers through their stdin
(`inferops.router.tablepipe`); it forwards SIGTERM and SIGINT to every worker, which drains
as a single router does, and exits when all have; a worker that dies otherwise is restarted
after a short backoff while the others keep serving. A worker whose stdin closes (the
supervisor died) stops, so none outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from inferops.router.sources import TableSource
from inferops.router.tablepipe import TableFeed

log = logging.getLogger("inferops.router.workers")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
STEADY_SECONDS = 30.0
"""A worker that ran this long before dying is restarted after the first backoff again."""


def worker_command(args: argparse.Namespace, index: int, port: int, run_dir: Path) -> list[str]:
    """The command line of worker `index`: the supervisor's own options for serving, its
    table source replaced by the pipe."""
    command = [
        sys.executable,
        "-m",
        "inferops.router",
        "--worker",
        str(index),
        "--workers",
        str(args.workers),
        "--run-dir",
        str(run_dir),
        "--host",
        args.host,
        "--port",
        str(port),
        "--grace-seconds",
        str(args.grace_seconds),
        "--upstream-connections",
        str(args.upstream_connections),
        "--upstream-keepalive-seconds",
        str(args.upstream_keepalive_seconds),
        "--loop",
        args.loop,
        "--log-level",
        args.log_level,
    ]
    for value in args.engine_url:
        command += ["--engine-url", value]
    if args.trust_consumer_header:
        command.append("--trust-consumer-header")
    if args.access_log:
        command.append("--access-log")
    return command


def reserve_port(host: str) -> socket.socket:
    """A free port for `--port 0`, bound with SO_REUSEPORT but not listening: the workers
    join it, and since it never listens the kernel never hands it a connection (a listening
    socket nobody accepts on would swallow its share). Kept open while the supervisor runs,
    so the port stays this pod's while workers restart."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    return sock


def next_backoff(previous: float, ran_seconds: float) -> float:
    """How long to wait before restarting a worker that died after `ran_seconds`."""
    if ran_seconds >= STEADY_SECONDS:
        return BACKOFF_FIRST
    return min(BACKOFF_MAX, previous * 2) if previous else BACKOFF_FIRST


class Supervisor:
    """Runs `count` workers made by `command(index)` and feeds them from `source`."""

    def __init__(
        self, source: TableSource, command: Callable[[int], list[str]], count: int
    ) -> None:
        self.source = source
        self.command = command
        self.count = count
        self.feed = TableFeed()
        self.stopping = False
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set, then until every worker has exited."""
        self._stop = stop
        log.info("routing table from %s, for %d workers", self.source.describe(), self.count)
        source = asyncio.create_task(self.source.run(self.feed))
        keepers = [asyncio.create_task(self._keep(i)) for i in range(self.count)]
        await stop.wait()
        self.stopping = True
        log.info("stopping: signalling %d workers", len(self.processes))
        for process in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        await asyncio.gather(*keepers)
        source.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source
        log.info("all workers stopped")

    async def _keep(self, index: int) -> None:
        """Worker `index`, restarted whenever it dies before a stop."""
        backoff = 0.0
        loop = asyncio.get_running_loop()
        while not self.stopping:
            started = loop.time()
            try:
                process = await asyncio.create_subprocess_exec(
                    *self.command(index), stdin=asyncio.subprocess.PIPE
                )
            except OSError as err:  # e.g. out of processes: as if it died at once
                backoff = next_backoff(backoff, 0.0)
                log.error("worker %d did not start (%s); retrying in %.1fs", index, err, backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                continue
            assert process.stdin is not None
            self.processes[index] = process
            self.feed.attach(index, process.stdin)
            log.info("worker %d started (pid %d)", index, process.pid)
            if self.stopping:  # the stop came while it was starting
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            code = await process.wait()
            self.feed.detach(index)
            self.processes.pop(index, None)
            with contextlib.suppress(OSError, RuntimeError):
                process.stdin.close()
            if self.stopping:
                log.info("worker %d exited (%s)", index, code)
                return
            backoff = next_backoff(backoff, loop.time() - started)
            log.error(
                "worker %d (pid %d) died (exit code %s); restarting in %.1fs",
                index,
                process.pid,
                code,
                backoff,
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            if not self.stopping:
                self.restarts += 1
                self.feed.restarted()


async def supervise(args: argparse.Namespace, source: TableSource) -> None:
    """The `--workers N` main: resolves the port and the run directory, runs the workers
    until SIGTERM or SIGINT."""
    own_dir = args.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="inferops-router-")) if own_dir else args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    reserved = reserve_port(args.host) if args.port == 0 else None
    port = reserved.getsockname()[1] if reserved is not None else args.port
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "supervisor (pid %d): %d workers on %s:%d, run directory %s",
        os.getpid(),
        args.workers,
        args.host,
        port,
        run_dir,
    )
    try:
        await Supervisor(
            source, lambda i: worker_command(args, i, port, run_dir), args.workers
        ).run(stop)
    finally:
        if reserved is not None:
            reserved.close()
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


__all__ = ["Supervisor", "next_backoff", "reserve_port", "supervise", "worker_command"]
