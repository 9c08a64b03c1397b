"""Stage render: music21 corpus scores rendered through GM SoundFonts with fluidsynth."""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import UsageError
from trainer.corpus._common import (CorpusConfig, SourceRecord, read_audio, read_manifest,
                                    spectral_bandwidth, write_flac, write_jsonl)
from trainer.corpus._packages import HAND_LICENCES, fetch_package

__all__ = ["SOUNDFONTS", "MUSIC21_LICENCE", "stage_render"]

log = logging.getLogger("trainer.corpus")  # one logger for every stage: corpus.log gets them all

SOUNDFONTS = {
    "fluid-soundfont-gm": "usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore-general-soundfont-lossless": "usr/share/sounds/sf2/MuseScore_General_Full.sf2",
}
MUSIC21_LICENCE = "music21 corpus (public-domain scores; toolkit BSD-3-Clause)"


# General MIDI melodic programs to draw part instruments from (0-based): pianos,
# chromatic percussion, organs, guitars, basses, strings, ensembles, brass, reeds, pipes,
# synth leads and pads -- sound effects (120-127) and percussive kits are left out.
_GM_PROGRAMS = [p for p in range(0, 96) if p not in (55, 47)]
_MAX_RENDER_S = 240.0  # longer renders are cut: more pieces per hour of render budget


def _render_one(index: int, score_path: str, sf2: str, wav_out: Path, seed: int) -> dict | None:
    """Parse one music21 corpus score, vary instruments/tempo/key, render with fluidsynth."""
    import warnings

    from music21 import corpus as m21corpus
    from music21 import instrument, tempo

    rng = np.random.default_rng([seed, index])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = m21corpus.parse(score_path)
            if not hasattr(score, "parts") or len(score.parts) == 0:
                return None
            semitones = int(rng.integers(-5, 7))
            if semitones:
                score = score.transpose(semitones)
            for mm in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
                mm.activeSite.remove(mm)
            bpm = float(rng.uniform(60, 160))
            programs = []
            for part in score.parts:
                for inst in list(part.recurse().getElementsByClass(instrument.Instrument)):
                    inst.activeSite.remove(inst)
                prog = int(rng.choice(_GM_PROGRAMS))
                programs.append(prog)
                part.insert(0, instrument.instrumentFromMidiProgram(prog))
            score.parts[0].insert(0, tempo.MetronomeMark(number=bpm))
            with tempfile.TemporaryDirectory() as tmp:
                mid = Path(tmp) / "x.mid"
                score.write("midi", fp=str(mid))
                wav = Path(tmp) / "x.wav"
                r = subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", "44100",
                                    "-T", "wav", "-O", "s16", "-F", str(wav), sf2, str(mid)],
                                   capture_output=True, text=True, timeout=600)
                if r.returncode != 0 or not wav.exists():
                    log.warning("fluidsynth failed on %s: %s", score_path, r.stderr[-200:])
                    return None
                audio, sr = read_audio(wav)
    except Exception as exc:  # music21 cannot parse/convert some corpus files
        log.warning("render skipped %s: %s", score_path, exc)
        return None
    # trim the silent tail fluidsynth leaves and normalise the peak to -1 dBFS
    env = np.abs(audio).max(axis=0)
    loud = np.nonzero(env > 1e-4)[0]
    if loud.size == 0:
        return None
    audio = audio[:, loud[0]:loud[-1] + int(0.5 * sr)][:, : int(_MAX_RENDER_S * sr)]
    audio *= 0.89 / max(float(np.abs(audio).max()), 1e-9)
    write_flac(wav_out, audio, sr)
    return {"score": score_path, "transpose_semitones": semitones, "bpm": round(bpm, 1),
            "programs": programs}


def stage_render(out: Path, cfg: CorpusConfig, n_jobs: int) -> list[dict]:
    from joblib import Parallel, delayed

    try:
        from music21 import corpus as m21corpus
    except ImportError:
        raise UsageError("the render stage needs music21 (its corpus of scores): "
                         "pip install music21, then rerun build-corpus") from None

    fonts = []
    for pkg, rel in SOUNDFONTS.items():
        fonts.append((pkg, str(fetch_package(pkg, out) / rel)))
    paths = [str(p) for p in m21corpus.getPaths()
             if Path(str(p)).suffix.lower() in (".mxl", ".xml", ".musicxml", ".krn", ".mid")
             # big scores (masses, symphonies) take minutes to parse and render and would
             # spend the render budget on a few pieces: variety matters more than length
             and Path(str(p)).stat().st_size < 120_000]
    paths.sort()
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(paths))
    kept, total_s, pos, batch = [], 0.0, 0, 2 * max(n_jobs, 1) * 4
    meta_path = out / "audio" / "render" / "render_meta.jsonl"
    meta = {}
    if meta_path.exists():
        meta = {m["file"]: m for m in read_manifest(meta_path)}
    while total_s < cfg.render_hours * 3600 and pos < len(order):
        jobs = []
        for i in order[pos:pos + batch]:
            pkg, sf2 = fonts[int(i) % len(fonts)]
            name = f"{int(i):05d}_{Path(paths[i]).stem}_{pkg.split('-')[0]}.flac"
            jobs.append((int(i), paths[i], pkg, sf2, out / "audio" / "render" / name))
        pos += batch
        todo = [j for j in jobs if not j[4].exists()]
        results = Parallel(n_jobs=n_jobs)(delayed(_render_one)(i, p, sf2, dst, cfg.seed)
                                          for i, p, _, sf2, dst in todo)
        for j, res in zip(todo, results):
            if res is not None:
                meta[j[4].name] = {"file": j[4].name, **res}
        for i, p, pkg, sf2, dst in jobs:
            if not dst.exists():
                continue
            audio, sr = read_audio(dst)
            bw, roll = spectral_bandwidth(audio, sr)
            m = meta.get(dst.name, {})
            rel_score = p.split("corpus" + os.sep, 1)[-1]
            kept.append(dataclasses.asdict(SourceRecord(
                id=f"render/{dst.stem}", path=str(dst.relative_to(out)), kind="render",
                package=pkg, licence=f"{MUSIC21_LICENCE}; SoundFont {HAND_LICENCES[pkg]}",
                duration_s=round(audio.shape[1] / sr, 3), sample_rate_hz=sr,
                channels=audio.shape[0], bitrate_kbps=None, bandwidth_995_hz=round(bw),
                rolloff_60db_hz=round(roll), sha1=fsutil.file_digest(dst, "sha1"),
                note=f"music21 {rel_score}; transpose {m.get('transpose_semitones')}; "
                     f"bpm {m.get('bpm')}; GM programs {m.get('programs')}")))
            total_s += audio.shape[1] / sr
        write_jsonl(meta_path, list(meta.values()))
        log.info("render: %.2f h so far", total_s / 3600)
    return kept
