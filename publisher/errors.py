"""Errors a user can act on.

The CLI turns every `PublishPrunedError` into one line on stderr (a JSON object on stdout under `--json`) and
a non-zero exit code; any other exception is a bug (its traceback is shown with `-v`). An error caused by the
Hub or the network being unavailable exits with HUB_UNAVAILABLE whatever its class (`hub.retry.hub_unavailable`).

    >>> raise SparsityError("sparsity must be in (0, 1), got 1.5")
"""


HUB_UNAVAILABLE = 75  # sysexits' EX_TEMPFAIL: "a temporary failure; the user is invited to retry"

# The exit codes of every command, for `--help` and the README; one meaning each.
EXIT_CODES = {
    0: "done",
    1: "internal error (a bug: -v shows the traceback); card sync: a card could not be synced",
    2: "bad input: an option, a file, the model, the token, the output folder (see the message)",
    3: "a publish failed or its files differ from the run; release: an artifact failed; disk full",
    HUB_UNAVAILABLE: "the Hub or the network is unavailable (refused, timed out, 408/429/5xx): retry later",
    130: "interrupted (Ctrl-C); finished stages are kept, re-run to continue",
}


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


class HubUnavailableError(PublishPrunedError):
    """The Hub did not answer, or answered 'try later'; nothing is wrong with the input: retry later."""

    exit_code = HUB_UNAVAILABLE


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
