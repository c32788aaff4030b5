"""The one exception type for user mistakes: the CLI prints it as a single line and exits non-zero."""


class LitGenError(Exception):
    """A mistake in the user's input (config, path, value). Its message names the culprit."""
