"""Content-addressed on-disk cache of probe results (joblib.Memory underneath).

A probe's outcome depends only on: the decoded PCM that was encoded, the preset's
encoder settings for the rung, the ffmpeg build, the scorer (and its model weights),
and the window grid. The key hashes exactly those, so a rerun with another target or
another pooling reuses every probe (we store per-window scores, never a pooled number),
while a new ffmpeg or new model weights miss.

Default location: ``$RATECONTROL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ratecontrol``, else
``~/.cache/ratecontrol``. Size cap: 256 MB by default (an entry is a few KB of window
scores), enforced with joblib's LRU-by-access ``reduce_size`` after each write.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["ProbeCache", "default_cache_dir", "pcm_digest", "preset_fingerprint", "DEFAULT_CACHE_MAX_MB"]

DEFAULT_CACHE_MAX_MB = 256


def default_cache_dir() -> Path:
    env = os.environ.get("RATECONTROL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ratecontrol"


def pcm_digest(audio: np.ndarray, sample_rate_hz: int) -> str:
    """sha256 of the float32 PCM (row-major [C, N] bytes), its shape and its rate.

    Hashed a row and ~16 MB at a time, so a mapped track (media.decode_to_disk) is never
    copied whole."""
    a = np.asarray(audio)
    h = hashlib.sha256()
    h.update(f"{a.shape}|{sample_rate_hz}|".encode())
    step = 1 << 22
    for row in a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a[None]:
        for i in range(0, row.shape[0], step):
            h.update(memoryview(np.ascontiguousarray(row[i:i + step], dtype=np.float32)).cast("B"))
    return h.hexdigest()


def _compute(key: dict, compute: Callable[[], dict]) -> dict:
    # joblib hashes ``key`` (ignores ``compute``) and stores the returned dict
    return compute()


class ProbeCache:
    """Cache of ``dict`` probe outcomes keyed by a dict of hashable key parts."""

    def __init__(self, directory: str | os.PathLike | None = None, max_mb: float = DEFAULT_CACHE_MAX_MB,
                 enabled: bool = True):
        self.enabled = enabled
        self.directory = Path(directory) if directory else default_cache_dir()
        self.max_mb = max_mb
        self.hits = 0
        self.misses = 0
        self._memory = None
        self._func = None
        # probes of two rungs may run at once (api.PARALLEL_PROBES)
        self._lock = threading.Lock()
        if enabled:
            import joblib

            self._memory = joblib.Memory(str(self.directory), verbose=0)
            self._func = self._memory.cache(_compute, ignore=["compute"])

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], dict]) -> dict:
        if not self.enabled:
            with self._lock:
                self.misses += 1
            return compute()
        if self._func.check_call_in_cache(key, compute):
            with self._lock:
                self.hits += 1
            return self._func(key, compute)
        with self._lock:
            self.misses += 1
        out = self._func(key, compute)
        with self._lock:
            self._memory.reduce_size(bytes_limit=int(self.max_mb * 1e6))
        return out

    def clear(self) -> None:
        if self._memory is not None:
            self._memory.clear(warn=False)


def preset_fingerprint(preset, rung) -> dict:
    """Everything of a preset rung that changes the encoded bits (not its name or label)."""
    return {
        "encoder": preset.encoder,
        "format": preset.format,
        "sample_rate_hz": preset.sample_rate_hz,
        "preset_options": sorted((str(k), str(v)) for k, v in preset.options.items()),
        "rung_options": sorted((str(k), str(v)) for k, v in rung.options.items()),
        "decoder_delay": (preset.decoder_delay_samples, preset.decoder_delay_rate_hz),
    }
