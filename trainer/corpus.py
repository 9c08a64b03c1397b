"""The default source corpus: a scripted, rebuildable folder of real audio to build data from.

`python -m trainer build-corpus DIR` fetches Debian packages with `apt-get download` and
unpacks them with `dpkg-deb -x` (nothing is installed system-wide except the two tools the
renders need, fluidsynth and espeak-ng), then writes

    DIR/audio/music/<package>/...   game music (Vorbis) that passed the bitrate/bandwidth gate
    DIR/audio/render/...            music21 corpus scores rendered through GM SoundFonts (FLAC)
    DIR/audio/drums/...             Hydrogen drum kits / Sonic Pi samples arranged into patterns
    DIR/audio/speech/...            Asterisk prompts (8 kHz) joined into passages; espeak-ng
    DIR/licences/<package>.copyright
    DIR/manifest.jsonl              one JSON line per kept source file (see SourceRecord)
    DIR/rejected.jsonl              every measured file that was dropped, with figures and why

Every stage is resumable: downloads, unpacked packages and rendered files are kept and
skipped on rerun; each stage's manifest part is written atomically when it completes.
The builder (`trainer.dataset`) reads DIR/manifest.jsonl for source ids and licences.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from ratecontrol.errors import DatasetError, UsageError

log = logging.getLogger("trainer.corpus")

KINDS = ("music", "render", "drums", "speech")
#: which files of the installed packages become corpus sources: deliberately narrower
#: than ratecontrol.contract.AUDIO_EXTENSIONS (a wider list would change the corpus,
#: and with it every label of the committed cache)
CORPUS_EXTENSIONS = (".ogg", ".oga", ".flac", ".wav", ".mp3", ".opus", ".aiff", ".aif")

# Debian bookworm packages with game music (all Vorbis). Sizes (apt-cache show, 2024):
# 36 MB (drascula) .. 228 MB (freedroidrpg); 1.3 GB in all.
MUSIC_PACKAGES = (
    "ufoai-music", "wesnoth-1.16-music", "hedgewars-data", "nexuiz-music",
    "supertux-data", "singularity-music", "colobot-common-sounds", "hyperrogue-music",
    "flare-game", "freedroidrpg-data", "drascula-music",
)
DRUM_PACKAGES = ("hydrogen-drumkits", "sonic-pi-samples")
SPEECH_PACKAGES = (
    "asterisk-core-sounds-en-wav", "asterisk-core-sounds-fr-wav", "asterisk-core-sounds-es-wav",
)
SOUNDFONTS = {
    "fluid-soundfont-gm": "usr/share/sounds/sf2/FluidR3_GM.sf2",
    "musescore-general-soundfont-lossless": "usr/share/sounds/sf2/MuseScore_General_Full.sf2",
}
# Packages whose copyright file is not machine-readable (DEP-5), read by hand (bookworm).
HAND_LICENCES = {
    "nexuiz-music": "GPL-2+",  # "either version 2 of the License, or (at your option) any later"
    "singularity-music": "CC-BY-SA",  # full Creative Commons BY-SA text under "License"
    "wesnoth-1.16-music": "GPL-2+",
    "fluid-soundfont-gm": "MIT",  # "I hereby release Fluid under the MIT license"
    "musescore-general-soundfont-lossless": "MIT",
    "espeak-ng": "GPL-3+",
}
MUSIC21_LICENCE = "music21 corpus (public-domain scores; toolkit BSD-3-Clause)"


@dataclass(frozen=True)
class CorpusConfig:
    """Gates and amounts of the default recipe. Defaults give ~14 h of audio in all."""

    #: Vorbis bitrate floor (stereo-equivalent). 96 kbps is Vorbis q2; the packages are
    #: mostly q3-q4 (110-160 kbps, measured), so this keeps the bulk and drops the low ones.
    min_bitrate_kbps: float = 96.0
    #: the -60 dB spectral rolloff must reach this: encoders low-pass narrow files
    #: (Vorbis q0 cuts ~11 kHz), and a narrow reference would teach the model that a
    #: low-pass costs nothing. 15 kHz keeps q2+ Vorbis (lowpass >= 15.5 kHz, libvorbis).
    min_rolloff_hz: float = 15000.0
    #: music shorter than this is a sound effect, not music
    min_music_duration_s: float = 20.0
    render_hours: float = 2.0
    drum_minutes: float = 50.0
    espeak_minutes: float = 30.0
    speech_passage_s: float = 60.0
    seed: int = 0


@dataclass(frozen=True)
class SourceRecord:
    """One kept source file (a line of manifest.jsonl)."""

    id: str
    path: str  # relative to the corpus folder
    kind: str
    package: str
    licence: str
    duration_s: float
    sample_rate_hz: int
    channels: int
    bitrate_kbps: float | None
    bandwidth_995_hz: float  # frequency under which 99.5 % of the spectral energy lies
    rolloff_60db_hz: float  # highest frequency within 60 dB of the spectral peak
    sha1: str
    note: str = ""


@dataclass(frozen=True)
class CorpusSummary:
    out_dir: Path
    files: int
    hours_by_kind: dict
    rejected: int


# --------------------------------------------------------------------------- measures
def spectral_bandwidth(audio: np.ndarray, sample_rate_hz: int, max_seconds: float = 120.0
                       ) -> tuple[float, float]:
    """(bandwidth_995_hz, rolloff_60db_hz) of the long-term spectrum of `audio` [C, N] or [N].

    bandwidth_995_hz: the frequency below which 99.5 % of the energy lies (music is
    bass-heavy, so this is 5-12 kHz even for full-band material);
    rolloff_60db_hz: the highest frequency whose Welch power is within 60 dB of the
    spectrum's peak -- a codec low-pass shows as a cliff of 60+ dB, so this finds it.
    Long inputs are measured on up to `max_seconds` taken evenly across the file.
    """
    from scipy.signal import welch

    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    limit = int(max_seconds * sample_rate_hz)
    if x.size > limit:  # 12 evenly spaced excerpts
        n = limit // 12
        starts = np.linspace(0, x.size - n, 12).astype(int)
        x = np.concatenate([x[s:s + n] for s in starts])
    if x.size < 4096 or not np.any(x):
        return 0.0, 0.0
    freqs, psd = welch(x, fs=sample_rate_hz, nperseg=4096)
    cum = np.cumsum(psd)
    bw = float(freqs[np.searchsorted(cum, 0.995 * cum[-1])])
    db = 10 * np.log10(psd + 1e-30)
    above = np.nonzero(db >= db.max() - 60.0)[0]
    return bw, float(freqs[above[-1]])


def _read(path: Path) -> tuple[np.ndarray, int]:
    """[C, N] float32 via libsndfile (reads Vorbis/FLAC/WAV/AIFF; decoding here is only
    for measuring and arranging -- the dataset builder decodes through ratecontrol.media)."""
    import soundfile as sf

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T.copy(), int(sr)


def _write_flac(path: Path, audio: np.ndarray, sample_rate_hz: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    with fsutil.atomic_output(path) as tmp:
        sf.write(str(tmp), np.clip(audio.T, -1, 1), sample_rate_hz, format="FLAC", subtype="PCM_16")


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    fsutil.atomic_write(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_manifest(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- packages
def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log.info("run: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


def ensure_tools() -> None:
    """fluidsynth + espeak-ng from Debian (installed once; the recipe runs as root on Debian)."""
    missing = [t for t in ("fluidsynth", "espeak-ng") if shutil.which(t) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise UsageError(f"build-corpus needs {', '.join(missing)}: install them "
                         f"(Debian: apt-get install {' '.join(missing)}) and rerun")
    r = _run(["apt-get", "install", "-y", "-q", *missing])
    if r.returncode != 0:
        _run(["apt-get", "update", "-q"])
        r = _run(["apt-get", "install", "-y", "-q", *missing])
    if r.returncode != 0:
        raise UsageError(f"apt-get install {' '.join(missing)} failed: {r.stderr.strip()[-300:]}")


def fetch_package(name: str, out: Path) -> Path:
    """`apt-get download` NAME into out/debs and unpack it into out/extract/NAME (cached)."""
    target = out / "extract" / name
    if (target / ".done").exists():
        return target
    debs = out / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        r = _run(["apt-get", "download", name], cwd=debs)
        if r.returncode != 0:  # package lists missing or stale
            _run(["apt-get", "update", "-q"])
            r = _run(["apt-get", "download", name], cwd=debs)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if r.returncode != 0 or not found:
            raise DatasetError(f"apt-get download {name} failed: {r.stderr.strip()[-300:]}; "
                               "check the package name (apt-cache policy) and the network")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    r = _run(["dpkg-deb", "-x", str(found[-1]), str(target)])
    if r.returncode != 0:
        raise DatasetError(f"dpkg-deb -x {found[-1]} failed: {r.stderr.strip()[-300:]}")
    (target / ".done").write_text(found[-1].name)
    return target


def _copyright_path(pkg_root: Path, name: str) -> Path | None:
    p = pkg_root / "usr/share/doc" / name / "copyright"
    if p.exists():
        return p
    hits = sorted(pkg_root.glob("usr/share/doc/*/copyright"))
    return hits[0] if hits else None


def _dep5_stanzas(text: str) -> list[tuple[list[str], str]]:
    """[(file patterns, licence short name)] of a DEP-5 copyright file, in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        m_files = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", block, re.M)
        m_lic = re.search(r"^License:[ \t]*(\S.*)$", block, re.M)
        if m_files and m_lic:
            stanzas.append((m_files.group(1).split(), m_lic.group(1).strip()))
    return stanzas


def licence_for(package: str, copyright_text: str | None, installed_path: str) -> str:
    """Best licence for one installed file: the last DEP-5 stanza whose Files: pattern
    matches (patterns name source paths, so a pattern's trailing components are matched
    against the end of the installed path), else the hand table, else 'see copyright'."""
    if package in HAND_LICENCES:
        return HAND_LICENCES[package]
    if not copyright_text:
        return "unknown (no copyright file)"
    best = None
    for patterns, lic in _dep5_stanzas(copyright_text):
        for pat in patterns:
            parts = pat.split("/")
            tails = ["/".join(parts[k:]) for k in range(len(parts))
                     if parts[-1] != "*" or k == 0]
            if pat == "*" or any(fnmatch.fnmatch(installed_path, "*/" + t)
                                 or fnmatch.fnmatch(installed_path, t) for t in tails):
                best = lic
                break
    return best or "see copyright"


# --------------------------------------------------------------------------- music
def _measure_music(path: Path, cfg: CorpusConfig) -> dict:
    """Measure one candidate music file; returns a row with keep/reason."""
    import soundfile as sf

    info = sf.info(str(path))
    row = {"duration_s": round(float(info.duration), 3), "sample_rate_hz": int(info.samplerate),
           "channels": int(info.channels)}
    row["bitrate_kbps"] = round(path.stat().st_size * 8 / max(info.duration, 1e-3) / 1000, 1)
    # stereo-equivalent: a mono file at 64 kbps is as generous as stereo at 128
    eq_kbps = row["bitrate_kbps"] * (2 / info.channels if info.channels == 1 else 1)
    if info.duration < cfg.min_music_duration_s:
        return {**row, "keep": False, "reason": f"shorter than {cfg.min_music_duration_s} s"}
    if info.samplerate < 44100:
        return {**row, "keep": False, "reason": "sample rate < 44.1 kHz"}
    audio, sr = _read(path)
    bw, roll = spectral_bandwidth(audio, sr)
    row.update(bandwidth_995_hz=round(bw), rolloff_60db_hz=round(roll))
    if eq_kbps < cfg.min_bitrate_kbps:
        return {**row, "keep": False, "reason": f"bitrate < {cfg.min_bitrate_kbps} kbps"}
    if roll < cfg.min_rolloff_hz:
        return {**row, "keep": False, "reason": f"rolloff_60db < {cfg.min_rolloff_hz} Hz"}
    return {**row, "keep": True, "reason": ""}


def stage_music(out: Path, cfg: CorpusConfig, n_jobs: int) -> tuple[list[dict], list[dict]]:
    from joblib import Parallel, delayed

    candidates = []  # (package, installed relpath, file to measure)
    for pkg in MUSIC_PACKAGES:
        root = fetch_package(pkg, out)
        for f in sorted(root.rglob("*")):
            if f.is_symlink() or not f.is_file():
                continue
            rel = str(f.relative_to(root))
            if f.suffix.lower() in CORPUS_EXTENSIONS:
                candidates.append((pkg, rel, f))
            elif f.suffix.lower() == ".pk3":  # zip archives (ufoai, nexuiz)
                unz = out / "extract" / f"{pkg}.pk3" / f.stem
                with zipfile.ZipFile(f) as z:
                    for m in z.namelist():
                        if Path(m).suffix.lower() in CORPUS_EXTENSIONS:
                            dst = unz / m
                            if not dst.exists():
                                dst.parent.mkdir(parents=True, exist_ok=True)
                                fsutil.atomic_write(dst, z.read(m))
                            candidates.append((pkg, rel + "/" + m, dst))
    log.info("music: %d candidate files", len(candidates))
    rows = Parallel(n_jobs=n_jobs)(delayed(_measure_music)(f, cfg) for _, _, f in candidates)
    kept, rejected, seen = [], [], set()
    for (pkg, rel, f), row in zip(candidates, rows):
        digest = fsutil.file_digest(f, "sha1")
        base = {"package": pkg, "installed_path": rel, **row}
        if not row["keep"]:
            rejected.append({**base, "kind": "music"})
            continue
        if digest in seen:
            rejected.append({**base, "kind": "music", "keep": False, "reason": "duplicate"})
            continue
        seen.add(digest)
        cpath = _copyright_path(out / "extract" / pkg, pkg)
        ctext = cpath.read_text(errors="replace") if cpath else None
        dst = out / "audio" / "music" / pkg / rel.replace("/", "__")
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dst)
            except OSError:
                shutil.copyfile(f, dst)
        kept.append(dataclasses.asdict(SourceRecord(
            id=f"music/{pkg}/{Path(rel).stem}-{digest[:8]}", path=str(dst.relative_to(out)),
            kind="music", package=pkg, licence=licence_for(pkg, ctext, rel),
            duration_s=row["duration_s"], sample_rate_hz=row["sample_rate_hz"],
            channels=row["channels"], bitrate_kbps=row["bitrate_kbps"],
            bandwidth_995_hz=row["bandwidth_995_hz"], rolloff_60db_hz=row["rolloff_60db_hz"],
            sha1=digest, note="Vorbis from " + rel)))
    return kept, rejected


# --------------------------------------------------------------------------- renders
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
                audio, sr = _read(wav)
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
    _write_flac(wav_out, audio, sr)
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
            audio, sr = _read(dst)
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
        _write_jsonl(meta_path, list(meta.values()))
        log.info("render: %.2f h so far", total_s / 3600)
    return kept


# --------------------------------------------------------------------------- drums
_DRUM_CATEGORIES = (
    ("kick", ("kick", "bd", "bass drum", "bassdrum", "kik")),
    ("snare", ("snare", "sn", "rim", "clap", "stick")),
    ("hat", ("hh", "hat", "hihat", "hi-hat", "shaker")),
    ("cymbal", ("crash", "ride", "cymbal", "china", "splash", "bell")),
)


def _drum_category(name: str) -> str:
    low = name.lower()
    for cat, words in _DRUM_CATEGORIES:
        if any(re.search(rf"(^|[^a-z]){re.escape(w)}", low) for w in words):
            return cat
    return "perc"


def _to_stereo_441(audio: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import resample_poly

    if sr != 44100:
        g = np.gcd(44100, sr)
        audio = resample_poly(audio, 44100 // g, sr // g, axis=1).astype(np.float32)
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return audio[:2]


def arrange_pattern(pools: dict[str, list[np.ndarray]], rng: np.random.Generator,
                    duration_s: float, bpm: float, bed: np.ndarray | None = None) -> np.ndarray:
    """Sequence one-shots (stereo 44.1 kHz) into a 16th-note groove of `duration_s`.

    Four-bar phrases: a base bar for kick/snare/hats, varied per phrase (ghost notes,
    open hats, fills on the last bar), random velocities 0.45-1.0 and a crash on phrase
    starts, so clips are not periodic copies of one bar. `bed` (a loop) is tiled under it.
    """
    sr = 44100
    n = int(duration_s * sr)
    mix = np.zeros((2, n + 4 * sr), np.float32)
    step = 60.0 / bpm / 4
    chosen = {c: pools[c][int(rng.integers(len(pools[c])))] for c in pools if pools[c]}
    if not chosen:
        return mix[:, :n]
    cats = list(chosen)

    def hit(cat, t, vel):
        s = chosen.get(cat)
        if s is None:
            s = chosen[cats[int(rng.integers(len(cats)))]]
        i = int(t * sr)
        if i >= n:
            return
        seg = s[:, : mix.shape[1] - i]
        pan = float(rng.uniform(0.3, 0.7))
        mix[0, i:i + seg.shape[1]] += vel * (1 - pan) * 2 * seg[0]
        mix[1, i:i + seg.shape[1]] += vel * pan * 2 * seg[1]

    if bed is not None:
        reps = int(np.ceil(n / bed.shape[1])) + 1
        tiled = np.tile(bed, (1, reps))[:, :n]
        mix[:, :n] += 0.6 * tiled
    bar_steps = 16
    bars = int(np.ceil(duration_s / (step * bar_steps)))
    for bar in range(bars):
        if bar % 4 == 0:  # new phrase: re-roll the groove
            kick = {0, 8} | {s for s in range(16) if rng.random() < 0.12}
            snare = {4, 12} | {s for s in range(16) if rng.random() < 0.08}
            hat_every = int(rng.choice([1, 2, 2, 4]))
            perc = {s for s in range(16) if rng.random() < 0.15}
            if "cymbal" in chosen:
                hit("cymbal", bar * 16 * step, float(rng.uniform(0.6, 1.0)))
        fill = bar % 4 == 3 and rng.random() < 0.6
        for s in range(16):
            t = (bar * 16 + s) * step + float(rng.normal(0, 0.004))  # human timing
            t = max(t, 0.0)
            if s in kick:
                hit("kick", t, float(rng.uniform(0.75, 1.0)))
            if s in snare or (fill and s >= 12 and rng.random() < 0.7):
                hit("snare", t, float(rng.uniform(0.6, 1.0)))
            if s % hat_every == 0:
                hit("hat", t, float(rng.uniform(0.45, 0.8)))
            if s in perc:
                hit("perc", t, float(rng.uniform(0.45, 0.9)))
    out = mix[:, :n]
    peak = float(np.abs(out).max())
    return out * (0.89 / peak) if peak > 0 else out


def _load_shot(path: Path, max_s: float = 2.0) -> np.ndarray | None:
    try:
        a, sr = _read(path)
    except Exception:
        return None
    a = _to_stereo_441(a, sr)[:, : int(max_s * 44100)]
    fade = min(2205, a.shape[1])  # 50 ms fade so truncated tails do not click
    a[:, a.shape[1] - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return a if np.abs(a).max() > 1e-4 else None


def stage_drums(out: Path, cfg: CorpusConfig) -> list[dict]:
    rng = np.random.default_rng([cfg.seed, 7])
    kept = []
    jobs = []  # (id, dst, pools, bed, package, licence, note)
    hroot = fetch_package("hydrogen-drumkits", out)
    hcopy = _copyright_path(hroot, "hydrogen-drumkits")
    htext = hcopy.read_text(errors="replace") if hcopy else None
    kits = sorted((hroot / "usr/share/hydrogen/data/drumkits").glob("*/drumkit.xml"))
    for kit in kits:
        tree = ET.parse(kit).getroot()
        for el in tree.iter():  # some kits use the Hydrogen XML namespace, some none
            el.tag = el.tag.rsplit("}", 1)[-1]
        lic = (tree.findtext("license") or "").strip()
        pools: dict[str, list[np.ndarray]] = {c: [] for c, _ in _DRUM_CATEGORIES}
        pools["perc"] = []
        for inst in tree.iter("instrument"):
            name = inst.findtext("name") or ""
            files = [e.text for e in inst.iter("filename") if e.text]
            for fn in files[:3]:
                cat = _drum_category(name if _drum_category(name) != "perc" else fn)
                shot = _load_shot(kit.parent / fn)
                if shot is not None:
                    pools[cat].append(shot)
        # the copyright file names each kit by its source archive, drumkits/<kit>.h2drumkit
        licence = licence_for("hydrogen-drumkits", htext, f"drumkits/{kit.parent.name}.h2drumkit")
        if licence == "see copyright" and lic:
            licence = lic[:120]  # the kit's own drumkit.xml <license> text
        jobs.append((kit.parent.name, pools, None, "hydrogen-drumkits", licence))
    sroot = fetch_package("sonic-pi-samples", out)
    scopy = _copyright_path(sroot, "sonic-pi-samples")
    stext = scopy.read_text(errors="replace") if scopy else None
    sdir = sroot / "usr/share/sonic-pi/samples"
    spools: dict[str, list[np.ndarray]] = {"kick": [], "snare": [], "hat": [], "cymbal": [], "perc": []}
    for f in sorted(sdir.glob("*.flac")):
        if f.name.startswith(("bd_", "drum_bass", "drum_heavy_kick")):
            spools["kick"].append(_load_shot(f))
        elif f.name.startswith(("sn_", "drum_snare", "elec_snare", "elec_hi_snare")):
            spools["snare"].append(_load_shot(f))
        elif f.name.startswith(("drum_cymbal_closed", "drum_cymbal_pedal", "elec_tick")):
            spools["hat"].append(_load_shot(f))
        elif f.name.startswith(("drum_cymbal", "drum_splash")):
            spools["cymbal"].append(_load_shot(f))
        elif f.name.startswith(("perc_", "tabla_", "elec_", "drum_")):
            spools["perc"].append(_load_shot(f))
    spools = {k: [s for s in v if s is not None] for k, v in spools.items()}
    loops = sorted(sdir.glob("loop_*.flac"))
    per_job_s = 45.0
    n_patterns = max(1, int(cfg.drum_minutes * 60 / per_job_s))
    variants = []  # cycle over kits and loops
    for k in range(n_patterns):
        if k % 3 == 2 and loops:
            loopf = loops[(k // 3) % len(loops)]
            bed_audio, sr = _read(loopf)
            bed = _to_stereo_441(bed_audio, sr)
            variants.append((f"sonic-pi-{loopf.stem}-{k:03d}", spools, bed, "sonic-pi-samples",
                             licence_for("sonic-pi-samples", stext,
                                         str(loopf.relative_to(sroot))), loopf.stem,
                             bed.shape[1] / 44100))
        else:
            name, pools, _, pkg, lic = jobs[k % len(jobs)]
            variants.append((f"hydrogen-{name.replace(' ', '_')}-{k:03d}", pools, None, pkg,
                             lic, f"kit {name}", None))
    for vid, pools, bed, pkg, lic, note, loop_s in variants:
        dst = out / "audio" / "drums" / f"{vid}.flac"
        if loop_s:  # lock the groove to the loop: assume 4, 8 or 16 beats, pick 80-180 bpm
            beats = [b for b in (4, 8, 16) if 80 <= 60 * b / loop_s <= 180]
            bpm = 60 * (beats[0] if beats else 8) / loop_s
        else:
            bpm = float(rng.uniform(70, 175))
        sub = np.random.default_rng([cfg.seed, 11, len(kept)])
        if not dst.exists():
            audio = arrange_pattern(pools, sub, per_job_s, bpm, bed)
            _write_flac(dst, audio, 44100)
        audio, sr = _read(dst)
        bw, roll = spectral_bandwidth(audio, sr)
        kept.append(dataclasses.asdict(SourceRecord(
            id=f"drums/{vid}", path=str(dst.relative_to(out)), kind="drums", package=pkg,
            licence=lic, duration_s=round(audio.shape[1] / sr, 3), sample_rate_hz=sr,
            channels=audio.shape[0], bitrate_kbps=None, bandwidth_995_hz=round(bw),
            rolloff_60db_hz=round(roll), sha1=fsutil.file_digest(dst, "sha1"),
            note=f"{note}; {bpm:.1f} bpm")))
    return kept


# --------------------------------------------------------------------------- speech
_ESPEAK_VOICES = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "de", "fr", "es", "it",
                  "nl", "pt", "pl", "sv"]
_ESPEAK_VARIANTS = ["", "+m1", "+m3", "+m5", "+f1", "+f2", "+f4", "+klatt", "+croak", "+whisper"]


def stage_speech(out: Path, cfg: CorpusConfig) -> list[dict]:
    rng = np.random.default_rng([cfg.seed, 5])
    kept = []

    def record(dst: Path, pkg: str, lic: str, note: str):
        audio, sr = _read(dst)
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
        cpath = _copyright_path(root, pkg)
        ctext = cpath.read_text(errors="replace") if cpath else None
        files = sorted(f for f in root.rglob("*.wav") if not f.is_symlink())
        lic = licence_for(pkg, ctext, str(files[0].relative_to(root))) if files else ""
        order = rng.permutation(len(files))
        passage, length, idx = [], 0, 0
        sr0 = None
        for i in list(order) + [None]:
            if i is not None:
                a, sr = _read(files[i])
                sr0 = sr0 or sr
                if sr != sr0:
                    continue
                passage += [a[:1], np.zeros((1, int(rng.uniform(0.2, 0.7) * sr)), np.float32)]
                length += a.shape[1]
            if passage and (i is None or length >= cfg.speech_passage_s * sr0):
                dst = out / "audio" / "speech" / f"{pkg}-{idx:03d}.flac"
                if not dst.exists():
                    _write_flac(dst, np.concatenate(passage, axis=1), sr0)
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
                r = _run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "-w", str(wav), text[:6000]])
                if r.returncode != 0 or not wav.exists():
                    raise DatasetError(f"espeak-ng failed (voice {voice}): {r.stderr[-200:]}")
                a, sr = _read(wav)
                a *= 0.89 / max(float(np.abs(a).max()), 1e-9)
                _write_flac(dst, a, sr)
        record(dst, "espeak-ng", HAND_LICENCES["espeak-ng"] + "; text /usr/share/common-licenses",
               f"voice {voice}, {speed} wpm, pitch {pitch}")
        total += kept[-1]["duration_s"]
        k += 1
    return kept


# --------------------------------------------------------------------------- recipe
STAGES = ("music", "render", "drums", "speech")


def build_corpus(out: Path, config: CorpusConfig = CorpusConfig(), n_jobs: int = 2,
                 stages: tuple[str, ...] = STAGES) -> CorpusSummary:
    """Run the default corpus recipe into `out` (resumable); returns hours per kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    handler = logging.FileHandler(out / "corpus.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for stage in stages:
            if stage not in STAGES:
                raise UsageError(f"unknown corpus stage {stage!r}; choose from {', '.join(STAGES)}")
            part = parts / f"{stage}.jsonl"
            if part.exists():
                log.info("stage %s already done (%s)", stage, part)
                continue
            log.info("stage %s", stage)
            if stage == "music":
                kept, rejected = stage_music(out, config, n_jobs)
                _write_jsonl(parts / "music.rejected.jsonl", rejected)
            elif stage == "render":
                ensure_tools()
                kept = stage_render(out, config, n_jobs)
            elif stage == "drums":
                kept = stage_drums(out, config)
            else:
                ensure_tools()
                kept = stage_speech(out, config)
            _write_jsonl(part, kept)
        rows, rejected = [], []
        for stage in STAGES:
            if (parts / f"{stage}.jsonl").exists():
                rows += read_manifest(parts / f"{stage}.jsonl")
        if (parts / "music.rejected.jsonl").exists():
            rejected = read_manifest(parts / "music.rejected.jsonl")
        _write_jsonl(out / "manifest.jsonl", rows)
        _write_jsonl(out / "rejected.jsonl", rejected)
        lic_dir = out / "licences"
        lic_dir.mkdir(exist_ok=True)
        for pkg_root in sorted((out / "extract").glob("*")):
            c = _copyright_path(pkg_root, pkg_root.name)
            if c and pkg_root.is_dir():
                shutil.copyfile(c, lic_dir / f"{pkg_root.name}.copyright")
        hours = {k: round(sum(r["duration_s"] for r in rows if r["kind"] == k) / 3600, 3)
                 for k in KINDS}
        summary = CorpusSummary(out_dir=out, files=len(rows), hours_by_kind=hours,
                                rejected=len(rejected))
        log.info("corpus: %d files, hours %s, %d rejected", len(rows), hours, len(rejected))
        return summary
    finally:
        log.removeHandler(handler)
        handler.close()
