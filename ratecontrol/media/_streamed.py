"""The threaded streamed encode: one ffmpeg process encodes an array and decodes its
own packets back; the array encode and the round trips are built on it."""
from __future__ import annotations

import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from .. import fsutil
from ._decode import _aligned, _delay_at, decode_blocks, resample_filter
from ._encode import (ENCODER_INPUT, WrittenFile, _add_filters, _as_audio, _finish, _output_kwargs, _resolve,
                      _temp_path)
from ._ffmpeg import batch_filter, failure, ff_path, ffmpeg_path, has_loopback_decoder, widen_pipe
from ._inspect import check_input_path
from ._layouts import canonical_layout
from ._tags import _build, _source_extras

__all__ = ["encode_array", "roundtrip", "roundtrip_info", "RoundTrip", "StreamedEncode"]


@dataclass(frozen=True)
class RoundTrip:
    """Result of :func:`roundtrip_info`: decoded audio plus what the encode cost."""

    audio: np.ndarray
    size_bytes: int
    bitrate_kbps: float
    #: the encoded file, when asked to keep it (``roundtrip_info(keep=True)``)
    encoded_path: Path | None = None


#: stdin feed of an array encode: a minute of 48 kHz stereo float32 (23 MB) at a time,
#: so a long (mapped, media.decode_to_disk) track is never copied whole
_FEED_SAMPLES = 48_000 * 60


def encode_array(
    audio: np.ndarray,
    sample_rate_hz: int,
    preset,
    rung,
    out_path,
    metadata: dict | None = None,
    tags_from=None,
) -> WrittenFile:
    """Encode float32 ``[C, N]`` audio (fed to ffmpeg as f32le on stdin, ENCODER_INPUT).

    This is ratecontrol's one encode path: probes and the shipped file both go through
    it, so what was scored is what is shipped. preset: a Preset or a name/path for
    load_preset. rung: a Rung, or a label/index into ``preset.rungs_for(C)``.
    metadata: tags to write. tags_from: a source file whose tags and cover art the
    output keeps (``metadata`` entries override its tags). Returns an WrittenFile.
    """
    with StreamedEncode(audio, sample_rate_hz, preset, rung, out_path, metadata=metadata, tags_from=tags_from,
                        decode_back=False) as job:
        return job.finish()


class StreamedEncode:
    """One ffmpeg process that encodes ``audio`` [C, N] to ``out_path`` *and* decodes
    its own packets back (a loopback decoder, ``-dec``, ffmpeg 7.0+), so the written
    file can be scored while it is being encoded: the check rides on the encode.

    ``blocks()`` yields the decode aligned with ``audio`` (the preset's residual delay
    removed, cut or padded to exactly N samples) as float32 ``[C, <= block_samples]``;
    ``finish()`` waits for ffmpeg and renames the file into place. Leaving the ``with``
    block without ``finish()`` (an error, a failed check) kills ffmpeg and removes the
    temp file. The loopback decode equals a decode of the written file sample for
    sample, priming removed (tests/test_oneencode.py, every preset); where ffmpeg has no
    loopback decoder the file is decoded after the encode instead (same samples).
    ``decode_back=False`` makes it the plain array encode (``encode_array``).
    ``lead_in``: audio [C, L] encoded before ``audio`` in the same stream (a probe's
    warm-up): the file holds both, ``blocks()`` yields the decode of ``audio`` only.
    """

    def __init__(self, audio: np.ndarray, sample_rate_hz: int, preset, rung, out_path,
                 metadata: dict | None = None, tags_from=None, block_samples: int = _FEED_SAMPLES,
                 decode_back: bool = True, lead_in: np.ndarray | None = None):
        self.audio = _as_audio(audio)
        self.rate = int(sample_rate_hz)
        self.channels, self.n = self.audio.shape
        self.lead = _as_audio(lead_in) if lead_in is not None else None
        if self.lead is not None and self.lead.shape[0] != self.channels:
            raise ValueError(f"lead-in has {self.lead.shape[0]} channels, the audio {self.channels}")
        self.n_lead = 0 if self.lead is None else self.lead.shape[1]
        self.preset, self.rung = _resolve(preset, rung, self.channels)
        self.src_file = check_input_path(tags_from) if tags_from is not None else None
        self.dest = fsutil.check_output_path(out_path, self.src_file)
        self.out = self.dest.path
        self.metadata, self.block_samples = metadata, int(block_samples)
        # decode_back=False: a plain encode (media.encode_array), nothing read back
        self.loopback = decode_back and has_loopback_decoder()
        self._proc = self._tmp = self._extras = self._errf = self._writer = None
        self._write_error: BaseException | None = None
        self._done = False
        self._stop = threading.Event()
        self._read_thread: threading.Thread | None = None

    def __enter__(self) -> "StreamedEncode":
        p, r = self.preset, self.rung
        layout = canonical_layout(self.channels, p.encoder)
        # a surround track's rows are in its coding layout (probing/track.py decoded it so)
        chans = {"ch_layout": layout} if layout else {"ac": self.channels}
        src = ffmpeg.input("pipe:", format=ENCODER_INPUT, ar=self.rate, **chans)
        kw = _output_kwargs(p, r, self.channels)
        _add_filters(kw, p.sample_rate_hz, p, self.rate, self.channels, min(self.channels, p.max_channels))
        self._tmp = _temp_path(self.out)
        try:
            if self.metadata or self.src_file is not None:
                cover_in = ffmpeg.input(ff_path(self.src_file)) if self.src_file is not None else None
                self._extras = _source_extras(self.src_file, cover_in, p, self.out, self.metadata)
                kw.update(self._extras.kw)
                meta_in = ffmpeg.input(ff_path(self._extras.meta_path), format="ffmetadata")
                stream = _build([src["a:0"], *self._extras.streams], meta_in, self._extras.meta_path,
                                ff_path(self._tmp), kw)
            else:
                stream = _build([src["a:0"]], None, None, ff_path(self._tmp), kw)
            cmd = ffmpeg.compile(stream.global_args("-hide_banner"), cmd=ffmpeg_path(), overwrite_output=True)
            if self.loopback:
                # output 0 stream 0 is the encoded audio: decode its packets, raw f32 on stdout
                # (back at the input's rate, with the resampler a decode of the file uses)
                lb = "anull" if int(p.sample_rate_hz or self.rate) == self.rate else resample_filter(self.rate)
                # the decoder's small frames (Opus: 960 samples) regrouped before the pcm
                # encoder, muxer and pipe (_ffmpeg.OUT_FRAME_SAMPLES: same samples)
                lb = ",".join(f for f in (lb, batch_filter()) if f)
                # (3+ channels: no -ac, which would convert to ffmpeg's default layout; the
                # decoder gives back the layout the encoder was fed)
                cmd += ["-dec", "0:0", "-filter_complex", f"[dec:0]{lb}[rc_loop]", "-map", "[rc_loop]",
                        "-c:a", "pcm_f32le", "-ar", str(self.rate),
                        *(["-ac", str(self.channels)] if layout is None else []),
                        "-f", "f32le", "pipe:1"]
            self._cmd = cmd
            self._errf = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=self._errf,
                                          stdout=subprocess.PIPE if self.loopback else subprocess.DEVNULL)
            # the decode read back in MiB reads (_ffmpeg.PIPE_BYTES); stdin is left at
            # 64 KiB: ffmpeg's demuxer reads 64 KiB at a time whatever the pipe holds, and
            # a wider one measured no fewer wake-ups (bench/bench_processes.py --ablate)
            widen_pipe(self._proc.stdout)
        except BaseException:
            self._cleanup()
            raise
        self._writer = threading.Thread(target=self._feed, name="ratecontrol-feed", daemon=True)
        self._writer.start()
        return self

    def _feed(self) -> None:
        try:
            for x in (self.lead, self.audio):
                for a in range(0, 0 if x is None else x.shape[1], _FEED_SAMPLES):
                    block = np.ascontiguousarray(x[:, a : a + _FEED_SAMPLES].T, dtype="<f4")
                    self._proc.stdin.write(memoryview(block).cast("B"))
        except (BrokenPipeError, ValueError, OSError):  # ffmpeg stopped (or was killed)
            pass
        except BaseException as exc:  # pragma: no cover - reported by finish()
            self._write_error = exc
        finally:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    #: decoded blocks read ahead of the consumer: ffmpeg's stdout pipe holds 64 KB, so
    #: without a reader thread the encode stalled whenever the check computed (a 4-min
    #: Opus check ran 5.0 s instead of ~2.6 s); 4 blocks = 4 minutes of 48 kHz stereo
    #: (92 MB) at most
    READ_AHEAD_BLOCKS = 4

    def _reader(self, q: "queue.Queue") -> None:
        want = 4 * self.channels * self.block_samples
        try:
            while not self._stop.is_set():
                raw = self._proc.stdout.read(want)
                while not self._stop.is_set():
                    try:
                        q.put(raw, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if not raw:
                    return
        except (OSError, ValueError):  # stdout closed by a cancel
            q.put(b"")

    def _raw_blocks(self):
        """Decoded float32 [C, k] blocks as ffmpeg produces them (priming removed)."""
        if self.loopback:
            frame = 4 * self.channels
            q: queue.Queue = queue.Queue(maxsize=self.READ_AHEAD_BLOCKS)
            self._read_thread = threading.Thread(target=self._reader, args=(q,), name="ratecontrol-read",
                                                 daemon=True)
            self._read_thread.start()
            carry = b""
            while True:
                raw = q.get()
                if not raw:
                    break
                raw = carry + raw
                cut = len(raw) - len(raw) % frame
                carry = raw[cut:]
                if cut:
                    yield np.frombuffer(raw, dtype="<f4", count=cut // 4).reshape(-1, self.channels).T
            self._wait()
        else:
            self._wait()
            yield from decode_blocks(self._tmp, self.rate, self.channels, self.block_samples)

    def blocks(self):
        """The decode, aligned with the input: exactly N samples in all."""
        # the lead-in's decode is not the caller's: dropped with the codec's delay
        delay = _delay_at(self.preset, self.rate) + self.n_lead
        yield from _aligned(self._raw_blocks(), self.channels, self.n, self.block_samples, delay)

    def _wait(self) -> None:
        if self._done:
            return
        rc = self._proc.wait()
        self._writer.join()
        self._done = True
        if rc != 0:
            self._errf.seek(0)
            err = self._errf.read().decode("utf-8", "replace")
            raise failure(f"encoding {fsutil.final_name(self.out)} with preset '{self.preset.name}' rung {self.rung.label}",
                          self._cmd, err)
        if self._write_error is not None:
            raise self._write_error

    def finish(self) -> WrittenFile:
        """Wait for ffmpeg (reading any decode left unread) and rename the file into place."""
        if self.loopback and not self._done:
            if self._read_thread is not None:  # blocks() stopped early: drop the rest
                self._stop.set()
                self._read_thread.join()
            while self._proc.stdout.read(1 << 20):
                pass
        self._wait()
        return _finish(self._tmp, self.dest, self.preset, self.rung, duration_s=(self.n_lead + self.n) / self.rate)

    def _cleanup(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._writer is not None:
            self._writer.join()
        if self._read_thread is not None:
            self._read_thread.join()
        for f in (getattr(self._proc, "stdout", None), self._errf):
            if f is not None:
                f.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._extras is not None:
            self._extras.meta_path.unlink(missing_ok=True)

    def __exit__(self, *exc) -> None:
        self._cleanup()


def roundtrip_info(audio: np.ndarray, sample_rate_hz: int, preset, rung, keep: bool = False,
                   lead_in: np.ndarray | None = None) -> RoundTrip:
    """Encode ``audio`` [C, N] with a rung, decode it back; see :func:`roundtrip`.

    ``keep``: leave the encoded file in this process's temp folder
    (``fsutil.run_temp_dir``) and return its path as ``encoded_path``; the caller
    deletes it (a kill leaves it to the next run's clean-up). ``lead_in``: [C, L] audio
    encoded first in the same stream and left out of the decode (StreamedEncode); the
    size is then the file's bytes less the lead-in's share by duration."""
    a = _as_audio(audio)
    channels, n = a.shape
    p, r = _resolve(preset, rung, channels)
    enc = fsutil.temp_sibling(fsutil.run_temp_dir() / f"rt{p.extension}")
    try:
        with StreamedEncode(a, sample_rate_hz, p, r, enc, block_samples=max(n, 1), lead_in=lead_in) as job:
            dec = np.concatenate(list(job.blocks()), axis=1)
            size = job.finish().size_bytes
            if job.n_lead:
                size = int(round(size * n / (n + job.n_lead)))
    except BaseException:
        enc.unlink(missing_ok=True)
        raise
    if not keep:
        enc.unlink(missing_ok=True)
    dur = n / float(sample_rate_hz)
    return RoundTrip(audio=np.ascontiguousarray(dec, dtype=np.float32), size_bytes=size,
                     bitrate_kbps=size * 8 / dur / 1000.0, encoded_path=enc if keep else None)


def roundtrip(audio: np.ndarray, sample_rate_hz: int, preset, rung,
              return_size: bool = False):
    """Encode + decode back at ``sample_rate_hz``, aligned sample-accurately, N samples.

    The codec's priming/padding is removed by ffmpeg (Opus pre-skip, the LAME gapless
    header, the MP4 edit list); any residual constant delay the preset declares is
    removed here; the result is cut (or zero-padded at the end) to exactly the input's
    N samples so it lines up with the reference for scoring.

    Returns float32 ``[C, N]``, or ``(audio, size_bytes)`` with ``return_size=True``
    (size of the whole encoded file, container included). ``roundtrip_info`` returns a
    RoundTrip with the bitrate too.
    """
    rt = roundtrip_info(audio, sample_rate_hz, preset, rung)
    return (rt.audio, rt.size_bytes) if return_size else rt.audio
