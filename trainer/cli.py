"""`python -m trainer ...`: each subcommand lives in the module that owns its work and is
loaded lazily, so `python -m trainer verify` does not import torch's training stack."""
from __future__ import annotations

import importlib
import click


# command name -> "module:attribute" of a click.Command
_COMMANDS = {
    "build-corpus": "trainer.corpus:build_corpus_command",
    "build-dataset": "trainer.build:build_dataset_command",
    "verify": "trainer.build:verify_command",
    "export-labels": "trainer.build:export_labels_command",
    "fit": "trainer.train:fit_command",
    "evaluate": "trainer.evaluate:evaluate_command",
    "export": "trainer.export:export_command",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=_LazyGroup)
def cli() -> None:
    """ratecontrol trainer: data building, training, evaluation, export."""


def main() -> None:
    from ratecontrol.cli import run_group

    run_group(cli)
