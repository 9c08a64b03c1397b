"""Stage speech: Asterisk prompts joined into passages; espeak-ng reading licence texts."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import DatasetError
from trainer.corpus._common import CorpusConfig, SourceRecord, read_audio, spectral_bandwidth, write_flac
from trainer.corpus._packages import HAND_LICENCES, copyright_path, fetch_package, licence_for, run_logged

__all__ = ["SPEECH_PACKAGES", "stage_speech"]

SPEECH_PACKAGES = (
    "asterisk-core-sounds-en-wav", "asterisk-core-sounds-fr-wav", "asterisk-core-sounds-es-wav",
)


_ESPEAK_VOICES = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "de", "fr", "es", "it",
                  "nl", "pt", "pl", "sv"]
_ESPEAK_VARIANTS = ["", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4", "+klatt", "+croak", "+whisper"]


def stage_speech(out: Path, cfg: CorpusConfig) -> list[dict]:
    rng = np.random.default_rng([cfg.seed, 5])
    kept = []

    def record(dst: Path, pkg: str, lic: str, note: str):
        audio, sr = read_audio(dst)
        bw, roll = spectral_bandwidth(audio, sr)
        kept.append(dataclasses.asdict(SourceRecord(
            id=f"speech/{dst.stem}", path=str(dst.relative_to(out)), kind="speech",
            package=pkg, licence=lic, duration_s=round(audio.shape[1] / sr, 3),
            sample_rate_hz=sr, channels=audio.shape[0], bitrate_kbps=None,
            bandwidth_995_hz=round(bw), rolloff_60db_hz=round(roll), sha1=fsutil.file_digest(dst, "sha1"),
            note=note)))

    # Asterisk prompts: 1-5 s each at 8 kHz; joined with 0.2-0.7 s pauses into passages
    # so windows hold running speech rather than one word and silence.
    for pkg in SPEECH_PACKAGES:
        root = fetch_package(pkg, out)
        cpath = copyright_path(root, pkg)
        ctext = cpath.read_text(errors="replace") if cpath else None
        files = sorted(f for f in root.rglob("*.wav") if not f.is_symlink())
        lic = licence_for(pkg, ctext, str(files[0].relative_to(root))) if files else ""
        order = rng.permutation(len(files))
        passage, length, idx = [], 0, 0
        sr0 = None
        for i in list(order) + [None]:
            if i is not None:
                a, sr = read_audio(files[i])
                sr0 = sr0 or sr
                if sr != sr0:
                    continue
                passage += [a[:1], np.zeros((1, int(rng.uniform(0.2, 0.7) * sr)), np.float32)]
                length += a.shape[1]
            if passage and (i is None or length >= cfg.speech_passage_s * sr0):
                dst = out / "audio" / "speech" / f"{pkg}-{idx:03d}.flac"
                if not dst.exists():
                    write_flac(dst, np.concatenate(passage, axis=1), sr0)
                record(dst, pkg, lic, f"{len(passage) // 2} Asterisk prompts joined")
                passage, length, idx = [], 0, idx + 1
    # espeak-ng: the licence texts shipped with Debian read in many voices and speeds.
    texts = []
    for f in sorted(Path("/usr/share/common-licenses").glob("*")):
        if f.is_file():
            texts += [p.strip() for p in f.read_text(errors="replace").split("\n\n")
                      if len(p.strip()) > 200]
    total, k = 0.0, 0
    while total < cfg.espeak_minutes * 60 and texts:
        voice = _ESPEAK_VOICES[k % len(_ESPEAK_VOICES)] + \
            _ESPEAK_VARIANTS[int(rng.integers(len(_ESPEAK_VARIANTS)))]
        speed, pitch = int(rng.integers(120, 220)), int(rng.integers(20, 80))
        text = " ".join(texts[(k * 3 + j) % len(texts)] for j in range(3))
        dst = out / "audio" / "speech" / f"espeak-{k:03d}.flac"
        if not dst.exists():
            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "s.wav"
                r = run_logged(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "-w", str(wav), text[:6000]])
                if r.returncode != 0 or not wav.exists():
                    raise DatasetError(f"espeak-ng failed (voice {voice}): {r.stderr[-200:]}")
                a, sr = read_audio(wav)
                a *= 0.89 / max(float(np.abs(a).max()), 1e-9)
                write_flac(dst, a, sr)
        record(dst, "espeak-ng", HAND_LICENCES["espeak-ng"] + "; text /usr/share/common-licenses",
               f"voice {voice}, {speed} wpm, pitch {pitch}")
        total += kept[-1]["duration_s"]
        k += 1
    return kept
