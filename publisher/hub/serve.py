"""`publish-pruned hub serve`: the bundled Hub emulator in the foreground, until Ctrl-C or SIGTERM.

    HF_TOKEN=hf_local_secret publish-pruned hub serve --root local-hub --port 8000

The one way to start it; `python -m publisher.emulator` runs this same command (same options and defaults),
for a checkout without the console script. Light on purpose: no torch, no huggingface_hub.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import click

from ..cli_errors import fail
from ..errors import SettingsError

DEFAULT_PORT = 8000
DEFAULT_USER = "local-user"
TOKEN_ENV = "HF_TOKEN"  # the variable clients read their token from, so one export serves both sides


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill PID` stops it as cleanly as Ctrl-C


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("local-hub"),
              help="Folder holding the emulator's repos (the --hub-dir of `--hub local`).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, help="Port on 127.0.0.1; 0: any free one.")
@click.option("--user", default=DEFAULT_USER, help="User name the token belongs to.")
@click.option("--token-env", default=TOKEN_ENV, help="Env var holding the write token the emulator accepts.")
@click.option("--read-token-env", help="Env var holding an extra read-only token (to rehearse a token without "
              "write access).")
@click.pass_context
def serve_command(ctx: click.Context, root: Path, port: int, user: str, token_env: str,
                  read_token_env: str | None) -> None:
    """Serve a local Hub-compatible emulator until Ctrl-C (clients need HF_HUB_DISABLE_XET=1); -v logs each
    request.

    \b
    HF_TOKEN=hf_local_secret publish-pruned hub serve --root local-hub --port 8000
    HF_ENDPOINT=http://127.0.0.1:8000 HF_HUB_DISABLE_XET=1 publish-pruned push runs/x
    """
    from ..cli_output import output_flags, print_json
    from ..emulator import HubEmulator

    token = os.environ.get(token_env)
    if not token:
        fail(SettingsError(f"set {token_env} to the write token the emulator should accept"), False)
    tokens = {token: (user, "write")}
    if read_token_env:
        if not os.environ.get(read_token_env):
            fail(SettingsError(f"--read-token-env {read_token_env}: that variable is empty"), False)
        tokens[os.environ[read_token_env]] = (user, "read")
    flags = output_flags(ctx)
    with contextlib.ExitStack() as stack:
        try:
            emulator = stack.enter_context(HubEmulator(root=root, tokens=tokens, port=port,
                                                       verbose=bool(flags.verbose)))
        except (OSError, ValueError) as exc:  # port taken, a user name the Hub would refuse
            fail(SettingsError(f"cannot serve on port {port}: {exc}"), False)
        if flags.json:
            print_json({"url": emulator.url, "root": str(root), "user": user})
        else:
            click.echo(f"serving {root} at {emulator.url} (Ctrl-C to stop)")
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _stop)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
