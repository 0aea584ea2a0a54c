"""Errors that carry the process exit code the CLI should use."""

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_MODEL = 4
EXIT_OOM = 5  # out of memory, or out of disk space
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM


class WanctlError(Exception):
    """An expected failure with a one-line, user-facing message."""

    exit_code = EXIT_UNEXPECTED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInputError(WanctlError):
    """Bad input file, artifact, option combination or mismatch (exit 3)."""

    exit_code = EXIT_BAD_INPUT


class ModelError(WanctlError):
    """A model folder is missing, incomplete, unloadable or of an unknown family (exit 4)."""

    exit_code = EXIT_MODEL


def model_error(message: str) -> ModelError:
    """A ModelError with the message on one line (runs of whitespace become one space)."""
    return ModelError(" ".join(str(message).split()))


class OutOfMemoryError(WanctlError):
    """The device ran out of memory (exit 5)."""

    exit_code = EXIT_OOM


class OutOfSpaceError(WanctlError):
    """The output's file system is full (exit 5, as out of memory: a resource, not the input)."""

    exit_code = EXIT_OOM


OOM_HINT = "try --offload model (or group), --vae-tiling, --text-encoder-device cpu, --batch-size 1, a smaller --size"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that it unwinds like Ctrl-C (temp files removed)."""
