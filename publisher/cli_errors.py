"""How the CLI ends on an error, and what it never prints: one `error:` line, tokens and URL credentials redacted.

    >>> redact("push to https://user:hf_abcdefgh@hub.example failed")
    'push to https://***@hub.example failed'
    >>> fail(SettingsError("--sparsity must be ..."), verbose=False)   # prints the line, exits with code 2

Its own module so that every command module (`cli`, `cli_measure`) can import it without importing each other.
"""

from __future__ import annotations

import errno
import json
import re
import sys

import click

from .errors import HUB_UNAVAILABLE, DiskFullError, HubUnavailableError, Interrupted, PublishPrunedError

TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9_]{6,}")


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")  # user:secret@ in http://user:secret@host


def redact(text: str) -> str:
    """Belt and braces: no token-looking string or URL credential ever reaches the terminal or a record."""
    return _URL_CREDENTIALS.sub("***@", TOKEN_PATTERN.sub("hf_***", text))


# Where -v/-q/--json, given before or after a command's name, are kept: click shares a context's `meta` with
# every context below it (`cli_output` sets and reads them; here because `fail` needs them too).
VERBOSE_KEY, QUIET_KEY, JSON_KEY = "publish_pruned.verbose", "publish_pruned.quiet", "publish_pruned.json"


def _flag(key: str) -> object:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(key) if ctx is not None else None


def fail(exc: BaseException, verbose: bool) -> None:
    """End the command for `exc`: a user's error is one redacted line on stderr and its exit code (a JSON object
    there under --json); the Hub or the network being unavailable is exit code 75 whatever raised it; a bug says -v
    shows it."""
    from .hub.retry import describe, hub_unavailable

    verbose = verbose or bool(_flag(VERBOSE_KEY))
    if isinstance(exc, KeyboardInterrupt):
        exc = Interrupted("interrupted: the output folder is resumable; re-run the same command to continue")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        exc = DiskFullError(f"no space left on the device{where}; free some and re-run the same command "
                            "(finished stages are kept)")
    if not isinstance(exc, PublishPrunedError) and hub_unavailable(exc):
        exc = HubUnavailableError(f"cannot reach the Hub ({describe(exc)}); retry later")
    if isinstance(exc, PublishPrunedError):
        _end(str(exc), HUB_UNAVAILABLE if hub_unavailable(exc) else exc.exit_code)
    if verbose:
        raise exc
    _end(f"internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)", 1)


def _end(message: str, code: int) -> None:
    if _flag(JSON_KEY):  # on stderr like the line it replaces: stdout holds results only
        click.echo(redact(json.dumps({"error": message, "exit_code": code}, indent=2)), err=True)
    else:
        click.echo(redact(f"error: {message}"), err=True)
    sys.exit(code)
