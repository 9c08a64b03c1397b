"""Train the quality model on labelled shards.

``python -m trainer fit --config trainer/configs/nsimnet.yaml --data 'shards/shard-{000000..000071}.tar' --out runs/nsimnet``

AdamW, linear warm-up then cosine decay, AMP on CUDA, gradient clipping, a checkpoint
every epoch (``last.pt``, resumed automatically when present) and the best one by
validation RMSE (``best.pt``), early stopping, CSV log (``log.csv``) and TensorBoard
when installed. Validation data: ``--val-data``, else the manifest's val split, else the
last shards of ``--data`` (``data.val_shards`` / ``data.val_fraction``).

Distributed: run under torchrun (``torchrun --nproc_per_node=N -m trainer fit ...``);
NCCL on CUDA, gloo on CPU. Each rank reads disjoint shards (split by node, then by
worker), DistributedDataParallel averages gradients, validation predictions are
gathered on every rank so all ranks take the same early-stopping decision, and rank 0
writes logs and checkpoints. See docs/model.md.

Checkpoints are library checkpoints (format_version, arch, kwargs, state_dict) plus a
``train_state`` entry, all tensors/primitives, so ``torch.load(weights_only=True)``,
``trainer evaluate`` and ``trainer export`` read them directly.

One module per job (this package re-exports the public names)::

    _config.py      DEFAULT_CONFIG, load_config(): the YAML config over the defaults
    _dist.py        the torchrun environment: rank, world, gathers, the process group
    _precompute.py  nsimnet's band statistics computed once per pair, and batches of them
    _runlog.py      log.csv, TensorBoard and the log line of each epoch
    _fit.py         fit(), in its steps (start, model, resume, data, epochs, checkpoints)
"""
from __future__ import annotations

from trainer.train._config import DEFAULT_CONFIG, load_config
from trainer.train._fit import FitResult, fit

__all__ = ["DEFAULT_CONFIG", "load_config", "fit", "FitResult"]
