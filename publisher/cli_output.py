"""What every command shares: `-v`/`-q`/`--json`, before or after the command's name, env vars shown in `--help`.

    publish-pruned --json plan --model org/m          # the same as
    publish-pruned plan --model org/m --json
    publish-pruned -v card lint runs/x/README.md

`apply_conventions(main)` adds the three options to every command and group once, after all are defined, so a
command module declares none of them; the values given at any level are combined in the context's `meta`, which
click shares down the chain, and read with `output_flags()`. Under `--json` a command prints one JSON object on
stdout, its result, and a failure prints `{"error": ..., "exit_code": N}` on stderr in place of the `error:`
line (`cli_errors.fail`, and `MainGroup` for click's own usage errors); logging below ERROR is off unless -v.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import click

from .cli_errors import JSON_KEY, QUIET_KEY, VERBOSE_KEY, redact


@dataclass(frozen=True)
class OutputFlags:
    verbose: int  # -v count: 1 shows tracebacks of internal errors and INFO logs, 2 DEBUG
    quiet: bool  # no progress bars or progress lines; results and errors only
    json: bool  # one JSON object on stdout


def output_flags(ctx: click.Context | None = None) -> OutputFlags:
    """The flags given anywhere on the command line (group or command level) for this invocation."""
    ctx = ctx or click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    return OutputFlags(int(meta.get(VERBOSE_KEY) or 0), bool(meta.get(QUIET_KEY)), bool(meta.get(JSON_KEY)))


def print_json(data: Any, *, err: bool = False) -> None:
    """One JSON document on stdout (an error: on stderr), tokens redacted."""
    click.echo(redact(json.dumps(data, indent=2, default=str)), err=err)


def _combine(key: str, counts: bool):
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        before = ctx.meta.get(key)
        ctx.meta[key] = (before or 0) + value if counts else bool(before) or bool(value)
        return value
    return callback


def _output_params() -> list[click.Option]:
    # Eager: read before any other option, so an error in another option's value already knows about --json
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True, show_default=False,
                     callback=_combine(VERBOSE_KEY, True),
                     help="More logging; -v also shows the traceback of an internal error, -vv debug logs."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_combine(QUIET_KEY, False),
                     help="No progress bars or progress lines: results and errors only."),
        click.Option(["--json"], is_flag=True, expose_value=False, is_eager=True, callback=_combine(JSON_KEY, False),
                     help='The result as one JSON object on stdout; an error as {"error": "...", "exit_code": N} on '
                     'stderr.'),
    ]


def configure_output(ctx: click.Context) -> None:
    """Logging level and progress bars for the command about to run, from the combined flags."""
    flags = output_flags(ctx)
    logging.basicConfig(level=logging.DEBUG if flags.verbose > 1 else logging.INFO if flags.verbose else
                        logging.ERROR if flags.json else logging.WARNING,  # --json: stderr holds the error alone
                        format="%(levelname)s %(name)s: %(message)s")
    if flags.quiet or flags.json:  # progress bars would be noise around a result, or around the JSON
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # transformers reads this switch when it is imported later
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def apply_conventions(command: click.Command) -> click.Command:
    """Give `command` and every command under it `-v`/`-q`/`--json` and `--help` lines naming each option's env
    var; its callback then configures logging first (only the command that runs: a group passing on to a
    subcommand leaves that to it, so flags given after the subcommand's name count too). Idempotent."""
    names = {p.name for p in command.params}
    if "verbose" not in names:
        command.params.extend(p for p in _output_params() if p.name not in names)
        callback = command.callback
        if callback is not None:
            @functools.wraps(callback)
            def configured(*args: Any, **kwargs: Any) -> Any:
                ctx = click.get_current_context()
                if not isinstance(command, click.Group) or ctx.invoked_subcommand is None:
                    configure_output(ctx)
                return callback(*args, **kwargs)
            command.callback = configured
    for param in command.params:
        if isinstance(param, click.Option):
            param.show_envvar = True
    for sub in getattr(command, "commands", {}).values():
        apply_conventions(sub)
    return command


class MainGroup(click.Group):
    """The top-level group: click's own errors (an unknown option, a bad value) are a JSON object too when
    `--json` was given, like every other error."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        words = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(words, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            if "--json" not in words:
                exc.show()
            else:
                print_json({"error": exc.format_message(), "exit_code": exc.exit_code}, err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
