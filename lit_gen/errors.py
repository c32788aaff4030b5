"""The one exception type for user mistakes: the CLI prints it as a single line and exits non-zero."""

#: how torch re-raises an exception from a DataLoader worker: a new one whose message is the worker's traceback
_WORKER_PREFIX = "Caught LitGenError in DataLoader worker"


class LitGenError(Exception):
    """A mistake in the user's input (config, path, value). Its message names the culprit."""

    def __init__(self, message: str) -> None:
        if message.startswith(_WORKER_PREFIX):  # keep the worker's own message, the traceback's last line
            message = message.rstrip().rsplit("LitGenError: ", 1)[-1]
        super().__init__(message)
