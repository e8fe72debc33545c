"""The `kubectl-ib` command line (`kubectl ib ...` once it is on PATH).

kubectl hands a plugin its environment (KUBECONFIG among it) but none of its own flags, so
`--kubeconfig` and `-n/--namespace` are parsed here, before or after the command, with
kubectl's defaults: the current context's namespace, else `default`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from kubernetes.config import ConfigException

from inferops.api import API_VERSION, KIND, SINGULAR
from inferops.api.migration import DURATION_PATTERN, seconds
from inferops.kube import Kube, KubeError, kubeconfig_namespace, path
from inferops.plugin.actions import Outcome, request_action
from inferops.plugin.render import render_status

FIELD_MANAGER = "kubectl-ib"
DEFAULT_TIMEOUT = 30.0
# 128 + SIGPIPE (13): the exit status shells give a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141

# The action commands and their help (argparse formats it: %% is a percent sign).
ACTION_HELP = {
    "promote": "move a consumer to its next step (--full: mark it Migrated at 100%% now, "
    "without the analysis at 100%%; at the last step only --full applies)",
    "pause": "hold a consumer at its current step (automatic rollback still acts)",
    "resume": "let a paused consumer continue",
    "abort": "send a consumer back to 0%% until `retry`",
    "retry": "start a rolled back or aborted consumer again from the first step, when list "
    "order and maxParallel allow",
    "ack": "accept the features a Pending consumer uses that vLLM would not honour (listed by "
    "`status`), so that its migration may start",
}


def _timeout(value: str) -> float:
    """Seconds, or a duration such as `90s` or `2m`."""
    if re.fullmatch(DURATION_PATTERN, value):
        return seconds(value)
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 30, 30s, 2m)") from None
    if number < 0:
        raise argparse.ArgumentTypeError("the timeout cannot be negative")
    return number


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    # The same flags on the top parser (with defaults) and on every command (SUPPRESS, so a
    # flag given before the command is not reset by the command's parser).
    parser.add_argument(
        "--kubeconfig", default=default, help="kubeconfig file (default: KUBECONFIG, then ~/.kube)"
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=default,
        help="namespace of the InferenceBackend (default: the context's, else default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl ib",
        description="Watch and steer the migration of an InferenceBackend's consumers from "
        "Ollama to vLLM.",
    )
    _common(parser, None)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status", parents=[common], help="the migration's state, per consumer, with figures"
    )
    status.add_argument("name", metavar="NAME", help="the InferenceBackend")
    status.add_argument("-o", "--output", choices=["json"], help="print status as JSON")

    for action, text in ACTION_HELP.items():
        # argparse %-formats help, not descriptions.
        command = commands.add_parser(
            action, parents=[common], help=text, description=text.replace("%%", "%")
        )
        command.add_argument("name", metavar="NAME", help="the InferenceBackend")
        default = {
            "retry": "the first RolledBack or Aborted one",
            "ack": "the first one held",
        }.get(action, "the one in progress")
        command.add_argument(
            "consumer", metavar="CONSUMER", nargs="?", help=f"the consumer (default: {default})"
        )
        if action == "promote":
            command.add_argument(
                "--full", action="store_true", help="promote to 100%% (the last step)"
            )
        command.add_argument(
            "--no-wait",
            dest="wait",
            action="store_false",
            help="do not wait for the operator's acknowledgement",
        )
        command.add_argument(
            "--timeout",
            type=_timeout,
            default=DEFAULT_TIMEOUT,
            help="how long to wait for the acknowledgement (default: 30s)",
        )
    return parser


async def _status(kube: Kube, namespace: str, args: argparse.Namespace) -> Outcome:
    obj = await kube.get(path(API_VERSION, KIND, namespace, args.name))
    if obj is None:
        return Outcome(1, f"{SINGULAR} {namespace}/{args.name} not found")
    if args.output == "json":
        return Outcome(0, json.dumps(obj.get("status", {}), indent=2, sort_keys=True))
    return Outcome(0, render_status(obj, datetime.now(UTC)))


async def run(
    argv: list[str], out: TextIO | None = None, err: TextIO | None = None, poll: float = 0.5
) -> int:
    """Runs one command; returns the exit code. Results go to `out`, failures to `err`."""
    out = out or sys.stdout
    err = err or sys.stderr
    args = build_parser().parse_args(argv)
    config_file = args.kubeconfig or os.environ.get("KUBECONFIG") or None
    namespace = args.namespace or kubeconfig_namespace(config_file) or "default"
    try:
        async with Kube.connect(field_manager=FIELD_MANAGER, config_file=config_file) as kube:
            if args.command == "status":
                outcome = await _status(kube, namespace, args)
            else:
                action = "promote-full" if getattr(args, "full", False) else args.command
                outcome = await request_action(
                    kube,
                    namespace,
                    args.name,
                    action,
                    args.consumer,
                    wait=args.wait,
                    timeout=args.timeout,
                    poll=poll,
                )
    except ConfigException as error:
        outcome = Outcome(1, f"no usable kubeconfig: {error}")
    except KubeError as error:
        # Status 0: Kube's word for a transport failure (refused, reset, timed out).
        text = error.message if error.status == 0 else f"the API server refused: {error}"
        outcome = Outcome(1, text)
    if outcome.code == 0:
        print(outcome.message, file=out)
    else:
        print(f"error: {outcome.message}", file=err)
    return outcome.code


def main() -> None:
    try:
        code = asyncio.run(run(sys.argv[1:]))
        sys.stdout.flush()  # a reader gone before the last buffered bytes shows here
    except BrokenPipeError:
        # The reader closed the pipe (`kubectl ib status NAME | head -1`): stop quietly, with
        # the status a shell reports for kubectl or cat killed by SIGPIPE. Python ignores
        # SIGPIPE (so the API connection's sockets raise instead of killing the process), so
        # this is done by hand. stdout goes to /dev/null so the interpreter's final flush of
        # what is still buffered does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    sys.exit(code)


if __name__ == "__main__":
    main()
