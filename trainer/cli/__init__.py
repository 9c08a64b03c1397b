"""`python -m trainer ...`: the click commands, thin, over the trainer's library modules
(which hold no click). One module per stage: build (build-dataset, verify,
export-labels), corpus (build-corpus), train (fit), evaluate, export. Each is loaded
lazily, so `python -m trainer verify` does not import torch's training stack."""
from __future__ import annotations

import importlib

import click

__all__ = ["cli", "main"]


# command name -> "module:attribute" of a click.Command
_COMMANDS = {
    "build-corpus": "trainer.cli.corpus:build_corpus_command",
    "build-dataset": "trainer.cli.build:build_dataset_command",
    "verify": "trainer.cli.build:verify_command",
    "export-labels": "trainer.cli.build:export_labels_command",
    "fit": "trainer.cli.train:fit_command",
    "evaluate": "trainer.cli.evaluate:evaluate_command",
    "export": "trainer.cli.export:export_command",
    "export-numpy": "trainer.cli.export:export_numpy_command",
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
