"""Decoding a file a preset encoded so that it lines up with its source sample for sample."""
from __future__ import annotations

import numpy as np

from ..presets import Preset, load_preset
from ._decode import decode_blocks

__all__ = ["decode_aligned", "decode_aligned_blocks"]


def _aligned(blocks, channels: int, n_samples: int, block_samples: int, delay: int):
    """Blocks with ``delay`` samples dropped (or zeros put first when negative), cut or
    zero-padded to exactly ``n_samples``."""
    skip = max(delay, 0)
    emitted = 0
    if delay < 0:
        lead = min(-delay, n_samples)
        yield np.zeros((channels, lead), np.float32)
        emitted = lead
    try:
        for x in blocks:
            if skip:
                k = min(skip, x.shape[1])
                x, skip = x[:, k:], skip - k
            x = x[:, : n_samples - emitted]
            if x.shape[1]:
                emitted += x.shape[1]
                yield np.ascontiguousarray(x, dtype=np.float32)
            if emitted >= n_samples:
                break
    finally:
        close = getattr(blocks, "close", None)
        if close:
            close()
    while emitted < n_samples:
        k = min(block_samples, n_samples - emitted)
        yield np.zeros((channels, k), np.float32)
        emitted += k


def _delay_at(preset: Preset, sample_rate_hz: int) -> int:
    """The preset's residual decoder delay converted to ``sample_rate_hz`` samples."""
    if not preset.decoder_delay_samples:
        return 0
    return int(round(preset.decoder_delay_samples * sample_rate_hz
                     / preset.decoder_delay_rate_hz))


def decode_aligned(path, preset, sample_rate_hz: int, channels: int, n_samples: int) -> np.ndarray:
    """Decode a file this preset encoded so it lines up with its source sample-accurately.

    ffmpeg removes the codec's priming (Opus pre-skip, LAME gapless header, MP4 edit
    list); the preset's measured residual delay is removed here; the result is cut or
    zero-padded at the end to ``n_samples``. Used by roundtrip; the full-track check
    reads the same samples as a stream (:func:`decode_aligned_blocks`).
    """
    blocks = list(decode_aligned_blocks(path, preset, sample_rate_hz, channels, n_samples, max(int(n_samples), 1)))
    return np.ascontiguousarray(np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0], dtype=np.float32)


def decode_aligned_blocks(path, preset, sample_rate_hz: int, channels: int, n_samples: int,
                          block_samples: int):
    """:func:`decode_aligned` as a stream: float32 ``[C, <= block_samples]`` blocks.

    One ffmpeg process decodes the whole file (no seeking: ffmpeg's -ss is not
    sample-accurate in MP4/AAC, measured off by 84-1001 samples at 44.1 kHz), so
    memory holds a block, not the track. The blocks add up to exactly ``n_samples``.
    """
    p = load_preset(preset)
    rate, ch = int(sample_rate_hz), int(channels)
    yield from _aligned(decode_blocks(path, rate, ch, block_samples), ch, int(n_samples), int(block_samples),
                        _delay_at(p, rate))
