"""Run the Hub emulator in the foreground.

    HUB_TOKEN=hf_local python -m publisher.emulator --root hub-data --port 8000 --user alice --token-env HUB_TOKEN

The write token is read from the environment variable named by ``--token-env``, never from the command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .server import HubEmulator


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m publisher.emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("hub-data"), help="folder holding blobs and repos")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind, 0 for any free one (default: 8000)")
    parser.add_argument("--user", default="local-user", help="user name owning the write token")
    parser.add_argument(
        "--token-env", default="HUB_EMULATOR_TOKEN", help="environment variable holding the write token"
    )
    parser.add_argument("--read-token-env", help="environment variable holding an optional read-only token")
    parser.add_argument("--verbose", action="store_true", help="log each request (method, path, status)")
    args = parser.parse_args(argv)

    token = os.environ.get(args.token_env)
    if not token:
        parser.error(f"set the write token in the environment variable {args.token_env}")
    tokens = {token: (args.user, "write")}
    if args.read_token_env:
        read_token = os.environ.get(args.read_token_env)
        if not read_token:
            parser.error(f"the environment variable {args.read_token_env} is empty")
        tokens[read_token] = (args.user, "read")

    hub = HubEmulator(root=args.root, tokens=tokens, host=args.host, port=args.port, verbose=args.verbose)
    try:
        hub.start()
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        return 1
    print(f"Hub emulator serving {args.root.resolve()} at {hub.url} (user {args.user})", flush=True)
    print(f"Clients: HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1; Ctrl-C stops.", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops it as cleanly as Ctrl-C
    try:
        hub.wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
