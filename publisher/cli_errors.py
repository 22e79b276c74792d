"""How the CLI ends on an error, and what it never prints: one `error:` line, tokens and URL credentials redacted.

    >>> redact("push to https://user:hf_abcdefgh@hub.example failed")
    'push to https://***@hub.example failed'
    >>> fail(SettingsError("--sparsity must be ..."), verbose=False)   # prints the line, exits with code 2

Its own module so that every command module (`cli`, `cli_measure`) can import it without importing each other.
"""

from __future__ import annotations

import errno
import re
import sys

import click

from .errors import DiskFullError, Interrupted, PublishPrunedError

TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9_]{6,}")


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")  # user:secret@ in http://user:secret@host


def redact(text: str) -> str:
    """Belt and braces: no token-looking string or URL credential ever reaches the terminal or a record."""
    return _URL_CREDENTIALS.sub("***@", TOKEN_PATTERN.sub("hf_***", text))


def fail(exc: BaseException, verbose: bool) -> None:
    """End the command for `exc`: a user's error is one redacted line and its exit code; a bug says -v shows it."""
    if isinstance(exc, KeyboardInterrupt):
        exc = Interrupted("interrupted: the output folder is resumable; re-run the same command to continue")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {exc.filename}" if exc.filename else ""
        exc = DiskFullError(f"no space left on the device{where}; free some and re-run the same command "
                            "(finished stages are kept)")
    if isinstance(exc, PublishPrunedError):
        click.echo(redact(f"error: {exc}"), err=True)
        sys.exit(exc.exit_code)
    if verbose:
        raise exc
    click.echo(redact(f"error: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback)"), err=True)
    sys.exit(1)
