"""The `publish-pruned` console script: a Ctrl-C while the libraries load is one line, like any other.

`publisher.cli` imports torch to list the pruning methods, which takes seconds; an interrupt then would
otherwise end in a traceback before the CLI's own error handling exists.
"""

import sys


def run() -> None:
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted while starting; nothing was done\n")
        sys.exit(130)
    main()
