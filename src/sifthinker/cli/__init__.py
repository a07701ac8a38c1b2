"""The `sifthinker` console script: one click group; each area registers its commands from a submodule."""

from __future__ import annotations

import importlib
import logging

import click

# Submodules that add commands to `main`; each owns one area (data, pipeline, model, serve, ...).
_NOISY_LOGGERS = ["great_expectations", "alembic", "mlflow", "urllib3", "httpx", "kfp", "matplotlib", "PIL"]
_COMMAND_MODULES = ["data", "pipeline", "model", "serve", "demo"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """SIFThinker: build SIF data, train, evaluate, register and serve spatial-reasoning VLMs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Third-party libraries log their internals at INFO; keep our own INFO lines readable.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


for _name in _COMMAND_MODULES:
    try:
        _mod = importlib.import_module(f"sifthinker.cli.{_name}")
    except ModuleNotFoundError as e:  # an area not yet present in this checkout
        if e.name != f"sifthinker.cli.{_name}":
            raise
        continue
    _mod.register(main)
