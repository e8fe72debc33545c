"""Runs inside the cached vLLM environment: vLLM's own API server argument parser, as data.

Started as a script with that environment's interpreter (``<env>/bin/python
e2e/engines/vllm_parser_probe.py COMMAND``), standard library and vLLM only:

- ``table``: print JSON describing the parser: every option string with its destination and
  how many values it takes, and the facts of argparse that decide how an argument is read
  (abbreviations allowed, prefix characters, options that look like negative numbers). The
  two ways the images start vLLM are both built, ``python -m
  vllm.entrypoints.openai.api_server`` (the inferops images' entrypoint) and ``vllm serve``
  (the ``vllm/vllm-openai`` image's), and must have the same options.
- ``parse``: read ``{"dests": [...], "cases": [[arg, ...], ...]}`` on stdin and print, for each
  case, what each of the two parsers makes of it: the values of those destinations (as JSON,
  or their repr) or the error that stops vLLM before it starts.

The parsers are built exactly as vLLM 0.32 builds them (``entry.main`` and ``cli/main.py``),
without running anything after the parse.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any

from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser


def api_server_parser() -> FlexibleArgumentParser:
    """As ``vllm.entrypoints.launchers.api_server.entry.main`` builds it."""
    return make_arg_parser(FlexibleArgumentParser(description="vLLM API server"))


def vllm_cli_parser() -> tuple[FlexibleArgumentParser, argparse.ArgumentParser]:
    """The ``vllm`` command's parser with its ``serve`` subcommand, as ``cli/main.py`` builds
    it (the other subcommands only add sibling subparsers), and the serve subparser."""
    parser = FlexibleArgumentParser(description="vLLM CLI")
    parser.add_argument("-v", "--version", action="version", version="0.32.0")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = ServeSubcommand().subparser_init(subparsers)
    return parser, serve


def nargs(action: argparse.Action) -> str:
    """How many values an option takes: "0", "1", "?", "*", "+" or a count."""
    if action.nargs is None:
        return "1"
    return str(action.nargs)


def describe(parser: argparse.ArgumentParser) -> dict[str, Any]:
    options = {
        option: [action.dest, nargs(action)]
        for action in parser._actions
        for option in action.option_strings
    }
    return {
        "allow_abbrev": parser.allow_abbrev,
        "prefix_chars": parser.prefix_chars,
        "fromfile_prefix_chars": parser.fromfile_prefix_chars,
        "negative_number_optionals": list(parser._has_negative_number_optionals),
        "positionals": [a.dest for a in parser._actions if not a.option_strings],
        "options": dict(sorted(options.items())),
    }


def table() -> dict[str, Any]:
    import vllm

    api = describe(api_server_parser())
    serve = describe(vllm_cli_parser()[1])
    if api != serve:
        raise SystemExit(
            "the api_server and vllm serve parsers differ: "
            + json.dumps({k: [api[k], serve[k]] for k in api if api[k] != serve[k]})
        )
    return {"vllm": vllm.__version__, "python": sys.version.split()[0], **api}


def jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def outcome(
    parse: Callable[[list[str]], argparse.Namespace], args: list[str], dests: list[str]
) -> dict[str, Any]:
    """Run one parse; argparse reports a bad argument by printing and exiting with 2."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            namespace = parse(args)
    except SystemExit as exc:
        return {"error": (stderr.getvalue().strip().splitlines() or [f"exit {exc.code}"])[-1]}
    except Exception as exc:  # vLLM's own pre-processing raises plain exceptions
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"values": {d: jsonable(getattr(namespace, d, None)) for d in dests}}


def parse(request: dict[str, Any]) -> list[dict[str, Any]]:
    # Built once: argparse keeps no state between parses.
    api = api_server_parser()
    cli = vllm_cli_parser()[0]

    def parse_serve(args: list[str]) -> argparse.Namespace:
        namespace = cli.parse_args(["serve", *args])
        # ServeSubcommand.cmd: "If model is specified in CLI (as positional arg), it takes
        # precedence", so the model that is served is the positional one.
        if getattr(namespace, "model_tag", None) is not None:
            namespace.model = namespace.model_tag
        return namespace

    dests = request["dests"]
    return [
        {
            "api_server": outcome(api.parse_args, args, dests),
            "serve": outcome(parse_serve, args, dests),
        }
        for args in request["cases"]
    ]


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "table":
        result: Any = table()
    elif command == "parse":
        result = parse(json.load(sys.stdin))
    else:
        raise SystemExit("usage: vllm_parser_probe.py table|parse")
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
