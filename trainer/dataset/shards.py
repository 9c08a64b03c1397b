"""Writing shards: webdataset tar files whose pairs are KEY.original.wav, KEY.degraded.wav
(1 s, mono, 44.1 kHz, 16-bit PCM), KEY.score.txt ((MOS - 1) / 4, 6 decimals) and KEY.json
(provenance). Members carry mtime 0, so the same seed gives byte-identical shards."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ratecontrol import fsutil
from ratecontrol.contract import mos_to_score
from trainer.dataset.config import SAMPLE_RATE_HZ

__all__ = ["wav_bytes", "write_shard"]


def wav_bytes(x: np.ndarray) -> bytes:
    """A 16-bit mono WAV file of int16 samples ``x``."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, np.int16), SAMPLE_RATE_HZ, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards for the same seed
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: Path, pairs: Iterable[tuple[str, np.ndarray, np.ndarray, float, dict]]) -> None:
    """Write the shard ``path`` atomically from (key, ref int16, deg int16, MOS, provenance)
    per pair."""
    with fsutil.atomic_output(path) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for key, ref, deg, mos, prov in pairs:
                _tar_add(tar, f"{key}.original.wav", wav_bytes(ref))
                _tar_add(tar, f"{key}.degraded.wav", wav_bytes(deg))
                _tar_add(tar, f"{key}.score.txt", f"{mos_to_score(mos):.6f}".encode())
                _tar_add(tar, f"{key}.json", json.dumps(prov, sort_keys=True).encode())
