"""`python -m trainer ...`: the click commands, thin, over the trainer's library modules
(which hold no click). One module per stage: build (build-dataset, verify,
export-labels), corpus (build-corpus), train (fit), evaluate, export. Each is loaded
lazily, so `python -m trainer verify` does not import torch's training stack."""
from __future__ import annotations

import contextlib
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


#: what the [train] extra installs beyond a plain install (pyproject.toml)
_TRAIN_MODULES = {"torch", "torchaudio", "webdataset"}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_COMMANDS)

    def get_command(self, ctx, name):
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        ctx.meta["trainer.command"] = name  # for invoke's message
        with _train_extra(ctx):
            return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        # the stages import torch / webdataset when they run, not when they load
        with _train_extra(ctx):
            return super().invoke(ctx)


@contextlib.contextmanager
def _train_extra(ctx):
    """A missing torch, torchaudio or webdataset -> one line naming the [train] extra
    (a plain install leaves them out: pyproject.toml), not a traceback."""
    try:
        yield
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in _TRAIN_MODULES:
            raise
        from ratecontrol.errors import UsageError

        command = ctx.meta.get("trainer.command")
        what = f"`python -m trainer {command}`" if command else "this trainer command"
        raise UsageError(f"{what} needs {top}, which is not installed; "
                         "pip install 'ratecontrol[train]'") from None


@click.group(cls=_LazyGroup)
def cli() -> None:
    """ratecontrol trainer: data building, training, evaluation, export."""


def main() -> None:
    from ratecontrol.cli import run_group

    run_group(cli)
