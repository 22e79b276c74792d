"""Errors a user can act on.

The CLI turns every `PublishPrunedError` into one line on stderr and a non-zero exit code; any other
exception is a bug (its traceback is shown with `-v`).

    >>> raise SparsityError("sparsity must be in (0, 1), got 1.5")
"""


class PublishPrunedError(Exception):
    """Base class: a problem with the user's input or environment, stated in one line."""

    exit_code = 2


class SettingsError(PublishPrunedError):
    """An option value that cannot work (sparsity out of range, unknown method, bad repo id...)."""


class ModelSourceError(PublishPrunedError):
    """The model to prune cannot be found, has no usable weights, or holds untrusted pickles."""


class ArchitectureError(PublishPrunedError):
    """The model has no decoder blocks we know how to prune."""


class OutputDirError(PublishPrunedError):
    """The output folder holds a different run, or a stage's files were tampered with."""


class HubAuthError(PublishPrunedError):
    """No token, an invalid token, or a token without write access."""


class PublishError(PublishPrunedError):
    """The upload failed or the remote files do not match the local run."""

    exit_code = 3


class CardError(PublishPrunedError):
    """The card cannot be rendered or fails its lint."""


class DiskFullError(PublishPrunedError):
    """No space left (or over quota) while writing; finished stages are kept, so a re-run continues."""

    exit_code = 3


class Interrupted(PublishPrunedError):
    """The user pressed Ctrl-C; the output folder was left resumable."""

    exit_code = 130


def describe_read_error(exc: Exception) -> str:
    """A YAML, decoding or OS error on one line (PyYAML's own message spans several, with a caret)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"{getattr(exc, 'problem', None) or 'invalid YAML'} at line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return " ".join(str(exc).split()) or type(exc).__name__
