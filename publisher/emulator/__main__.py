"""`python -m publisher.emulator`: the same command as `publish-pruned hub serve` (same options, defaults and
token variable), for a checkout without the console script.

    HF_TOKEN=hf_local python -m publisher.emulator --root local-hub --port 8000
"""

from __future__ import annotations

from ..cli_output import apply_conventions
from ..hub.serve import serve_command

if __name__ == "__main__":
    apply_conventions(serve_command).main(prog_name="python -m publisher.emulator")
