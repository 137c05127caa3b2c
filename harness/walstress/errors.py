"""Exceptions that the command line turns into exit codes."""


class WalstressError(Exception):
    """Base class for errors the user can act on (reported as one line, no traceback)."""


class ScenarioError(WalstressError):
    """A scenario file, key or value is wrong. Exit code 2."""

    def __init__(self, source: str, key: str | None, message: str):
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: " if source else ""
        what = f"{key}: " if key else ""
        super().__init__(f"{where}{what}{message}")


class UsageError(WalstressError):
    """A command-line argument is wrong. Exit code 2."""


class EnvironmentProblem(WalstressError):
    """Something the run needs is not available on this machine (exit code 2)."""
