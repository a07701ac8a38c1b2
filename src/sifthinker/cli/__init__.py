"""The `sifthinker` console script: one click group; each area registers its commands from a submodule.

The library's own areas (data, model, serve) are listed here. Other layers plug their commands in through
the ``sifthinker.commands`` entry point group (pyproject.toml): the Kubeflow layer in ``pipelines/`` adds
``pipeline``, ``run`` and ``demo`` that way, so the library never imports the layer built on top of it.

The top of the library: it may import every part.
"""

from __future__ import annotations

import importlib
import logging
import sys
from importlib.metadata import entry_points

import click

from sifthinker.cli.common import CLIError

PLUGIN_GROUP = "sifthinker.commands"
_COMMAND_MODULES = ["data", "model", "serve", "eval"]
_NOISY_LOGGERS = ["great_expectations", "alembic", "mlflow", "urllib3", "httpx", "kfp", "matplotlib", "PIL"]


class _Main(click.Group):
    """The group that makes every error one line: a usage mistake (click prints the whole usage block
    otherwise) and an unexpected exception alike (``-v`` shows its traceback)."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as e:
            where = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
            click.echo(f"Error: {e.format_message()}{where}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if ctx.params.get("verbose"):
                raise
            msg = (str(e).strip().splitlines() or [""])[0]
            raise CLIError(f"{type(e).__name__}: {msg} (run `sifthinker -v ...` for the traceback)") from e


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, everything on the console, tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """SIFThinker: build SIF data, train, evaluate, register and serve spatial-reasoning VLMs."""
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Third-party libraries log their internals at INFO; keep our own INFO lines readable.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


for _name in _COMMAND_MODULES:
    importlib.import_module(f"sifthinker.cli.{_name}").register(main)

for _ep in entry_points(group=PLUGIN_GROUP):
    try:
        _ep.load()(main)
    except ImportError as _e:  # e.g. the serving image without kfp: the other commands still work
        print(f"warning: commands from {_ep.value} are unavailable: {_e}", file=sys.stderr)
