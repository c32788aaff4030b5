"""The one exception type for user mistakes, and the single line the CLI prints for it (or for a parse error
of jsonargparse's) before it exits non-zero."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

#: how torch re-raises an exception from a DataLoader worker: a new one whose message is the worker's traceback
_WORKER_PREFIX = "Caught LitGenError in DataLoader worker"


class LitGenError(Exception):
    """A mistake in the user's input (config, path, value). Its message names the culprit."""

    def __init__(self, message: str) -> None:
        if message.startswith(_WORKER_PREFIX):  # keep the worker's own message, the traceback's last line
            message = message.rstrip().rsplit("LitGenError: ", 1)[-1]
        super().__init__(message)


_NOISE_PREFIXES = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value",
)


#: a key whose value names a config file that is not there (e.g. ``trainer.logger: shared/loggers.yaml``)
_MISSING_SUBCONFIG = re.compile(
    r'Parser key "([^"]+)":.*?Expected a path but (\S+\.(?:ya?ml|json)) either not accessible', re.DOTALL
)


def summarize_parse_error(message: str) -> str:
    """One line from a jsonargparse message: the key it names and its most specific complaints, without the
    Union/NoneType boilerplate."""
    missing = _MISSING_SUBCONFIG.match(str(message))
    if missing:
        key, path = missing.groups()
        return f"{key}: no file '{path}' (a relative path in a config file is relative to that file's folder)"
    lines = [line.strip().lstrip("- ").strip() for line in str(message).splitlines()]
    lines = [line for line in lines if line and not line.startswith(_NOISE_PREFIXES)]
    lines = [line for line in lines if line != "Expected a <class 'NoneType'>"]
    text = " ".join(lines)
    return text if len(text) <= 400 else text[:397] + "..."


def name_bad_config_file(args: list[str], message: str) -> str:
    """jsonargparse reports a config file that is not valid YAML without naming it: prefixes the message with
    the first ``--config`` file that YAML cannot parse."""
    if not message.startswith("Problems parsing config"):
        return message
    paths = [b for a, b in zip(args, args[1:]) if a == "--config"]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        try:
            yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            detail = message.replace(' in "<unicode string>"', "")
            return f"config: '{path}': {detail}"
    return message


def user_error_in(err: BaseException) -> LitGenError | None:
    """The LitGenError behind ``err`` (jsonargparse wraps errors raised while instantiating classes)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LitGenError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def fail(message: str, code: int = 2) -> None:
    """Prints ``lit_gen: error: <message>`` on one line to stderr and exits with ``code``."""
    print(f"lit_gen: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)
