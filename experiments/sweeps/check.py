"""Checks W&B sweep files against the lit_gen CLI before an agent runs them.

    python experiments/sweeps/check.py experiments/sweeps/*.yaml

Run from anywhere; config paths in the sweeps' commands are relative to the repository root, where
``wandb agent`` is to be started. For each sweep: builds the command a ``wandb agent`` runs (its ``command`` with ``${args}`` expanded by
W&B's own code: ``--key=value`` per parameter) and parses it with lit_gen's CLI, once with every parameter at
its first value and once per further value of each parameter. Nothing is trained and no run directory is
made. A key the CLI does not know, or a value it rejects, ends with one line naming the sweep file and the
parameter (``lit_gen: error: ...``) and exit status 2.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError

from lit_gen.cli import LitGenCLI, fail, summarize_parse_error
from lit_gen.errors import LitGenError

METHODS = ("grid", "random", "bayes")
#: where ``wandb agent`` is run, so that the sweeps' ``--config configs/...`` paths resolve
REPO_ROOT = Path(__file__).resolve().parents[2]


def parameter_values(path: Path, key: str, spec: Any) -> list[Any]:
    """The values a sweep can give ``key``: ``value``, ``values``, or the ends of a ``min``/``max`` range."""
    if not isinstance(spec, dict):
        raise LitGenError(f"{path}: parameters.{key}: expected a mapping with value, values or min/max")
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec and spec["values"]:
        return list(spec["values"])
    if "min" in spec and "max" in spec:
        return [spec["min"], spec["max"]]
    if "parameters" in spec:
        raise LitGenError(
            f"{path}: parameters.{key}: nested parameters do not map to CLI keys; use dotted keys"
        )
    raise LitGenError(f"{path}: parameters.{key}: no value, values or min/max")


def agent_args(params: dict[str, Any]) -> list[str]:
    """The ``${args}`` of a W&B agent for these parameter values (W&B's own formatting: ``--key=value``)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    return create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})["args"]


def agent_command(sweep: dict[str, Any], params: dict[str, Any], interpreter: str = "python") -> list[str]:
    """The command line a W&B agent runs for one set of parameter values (``${env}`` left out)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command

    variables = {
        "env": [],
        "interpreter": [interpreter],
        "program": [sweep["program"]] if sweep.get("program") else [],
        "args": agent_args(params),
    }
    argv: list[str] = []
    for item in create_sweep_command(sweep.get("command")):
        item = str(item)
        if item.startswith("${") and item.endswith("}"):
            if item[2:-1] not in variables:
                raise LitGenError(f"command: {item} is not supported by lit_gen (use ${{args}}: --key=value)")
            argv += variables[item[2:-1]]
        else:
            argv.append(item)
    return argv


def cli_args(path: Path, command: list[str]) -> list[str]:
    """The arguments after ``-m lit_gen`` in a sweep's command."""
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == "lit_gen":
            return command[i + 2 :]
    raise LitGenError(f"{path}: command must run `${{interpreter}} -m lit_gen fit --config ...`")


def load_sweep(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LitGenError(f"no such sweep file '{path}'")
    sweep = yaml.safe_load(path.read_text())
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict):
        raise LitGenError(f"{path}: not a W&B sweep (no parameters mapping)")
    if sweep.get("method") not in METHODS:
        raise LitGenError(f"{path}: method must be one of {', '.join(METHODS)}, got {sweep.get('method')!r}")
    metric = sweep.get("metric") or {}
    if sweep["method"] == "bayes" or metric:
        if not metric.get("name") or metric.get("goal") not in ("minimize", "maximize"):
            raise LitGenError(f"{path}: metric needs a name and goal: minimize or maximize")
    return sweep


class _Parsed(Exception):
    """Stops the CLI after parsing (before anything is built or a run directory is made)."""

    def __init__(self, cli: LitGenCLI) -> None:
        super().__init__("parsed")
        self.cli = cli


class _ParseOnly(LitGenCLI):
    def before_instantiate_classes(self) -> None:
        raise _Parsed(self)


def parsing_cli(path: Path, args: list[str]) -> LitGenCLI:
    """A lit_gen CLI that has parsed ``args`` (its parser is reused for further argument lists)."""
    try:
        _ParseOnly(args=args)
    except _Parsed as parsed:
        return parsed.cli
    except ArgumentError as err:
        raise LitGenError(
            f"{path}: the sweep's command is rejected by the CLI: {summarize_parse_error(str(err))}"
        ) from None
    raise LitGenError(f"{path}: the sweep's command runs no lit_gen subcommand")


def rejection(cli: LitGenCLI, args: list[str]) -> str | None:
    """Why the CLI rejects ``args`` (one line), or None when it parses them."""
    try:
        cli.parse_arguments(cli.parser, args)
    except ArgumentError as err:
        return summarize_parse_error(str(err))
    return None


def check_sweep(path: Path) -> int:
    """Parses the sweep's command (as a W&B agent builds it) with every parameter at its first value, then
    once per further value of each parameter; returns the number of parameter sets parsed. Raises
    ``LitGenError`` naming the first parameter the CLI rejects."""
    sweep = load_sweep(path)
    values = {key: parameter_values(path, key, spec) for key, spec in sweep["parameters"].items()}
    cli = parsing_cli(path, cli_args(path, agent_command(sweep, {})))
    first = {key: vals[0] for key, vals in values.items()}
    sets = [(None, None, first)] + [
        (key, value, {**first, key: value}) for key, vals in values.items() for value in vals[1:]
    ]
    for key, value, params in sets:
        message = rejection(cli, cli_args(path, agent_command(sweep, params)))
        if message is None:
            continue
        if key is None:  # which parameter? each one alone
            for key, value in first.items():
                message = rejection(cli, cli_args(path, agent_command(sweep, {key: value})))
                if message is not None:
                    break
        unknown_key = ("nrecognized arguments", "No action for key", "is not accepted")
        if any(text in message for text in unknown_key):
            raise LitGenError(
                f"{path}: parameter '{key}' is not a key the lit_gen CLI knows "
                "(`python -m lit_gen fit --config CONFIG --print_config` lists them)"
            )
        raise LitGenError(f"{path}: parameter '{key}' = {value!r} is rejected by the CLI: {message}")
    return len(sets)


def main(argv: list[str] | None = None) -> None:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        fail("usage: python experiments/sweeps/check.py SWEEP.yaml [SWEEP.yaml ...]")
    try:
        for text in paths:
            path = Path(text).resolve()
            with contextlib.chdir(REPO_ROOT):  # agents run from the repository root (config paths)
                checked = check_sweep(path)
            print(f"ok: {text} ({checked} parameter sets parsed by the CLI)")
    except LitGenError as err:
        fail(str(err))


if __name__ == "__main__":
    main()
