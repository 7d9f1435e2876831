"""One exception hierarchy; the CLI maps each class to its exit code (`exit_code`).

Adapters translate botocore, requests and subprocess failures into these classes at their boundary,
so nothing above them has to know which library failed. The texts live in `messages`.
"""

from __future__ import annotations

from snaptastic_boot import messages

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_LOCKED = 4


class SnaptasticError(Exception):
    """Base of every error the agent reports to the user as one line."""

    exit_code = EXIT_FAILED


class OperationFailed(SnaptasticError):
    """An EC2 call, a command or a wait did not succeed."""


class BadInput(SnaptasticError):
    """Userdata, configuration or command-line arguments are wrong; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class ValidationFailed(BadInput):
    """Several (path, message) problems found by a schema or a semantic check."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        parts = [f"{source}.{path}: {message}" if path else f"{source}: {message}" for path, message in problems]
        super().__init__("; ".join(parts))


class EnvironmentNotUsable(SnaptasticError):
    """No metadata service, no credentials, a required tool missing."""

    exit_code = EXIT_ENVIRONMENT


class MetadataUnavailable(EnvironmentNotUsable):
    pass


class CredentialsMissing(EnvironmentNotUsable):
    pass


class ToolMissing(EnvironmentNotUsable):
    pass


class UsageError(BadInput):
    """The command line is wrong."""


class ConfigError(BadInput):
    """The settings file or the JSON config is wrong."""


class UserdataError(BadInput):
    """The userdata is missing or wrong."""


class LockHeld(SnaptasticError):
    exit_code = EXIT_LOCKED


class Stopped(OperationFailed):
    """A signal asked the run to stop; it stopped between two steps."""


class CommandError(OperationFailed):
    """A system command exited with an unexpected code; carries what it printed."""

    def __init__(self, argv: list[str], returncode: int | None, stdout: str, stderr: str, reason: str = "") -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = reason or f"exit code {returncode}"
        last = (stderr or stdout).strip().splitlines()
        tail = f": {last[-1]}" if last else ""
        super().__init__(f"command {' '.join(argv)!s} failed ({detail}){tail}")


class AwsError(OperationFailed):
    """An EC2 API call failed after its retries."""

    def __init__(self, action: str, code: str, message: str) -> None:
        self.action = action
        self.code = code
        super().__init__(messages.ec2_failed(action, f"{code}: {message}"))


class WaitTimeout(OperationFailed):
    pass


class UnsafeOperation(OperationFailed):
    """The agent refused to do something that could lose data."""
