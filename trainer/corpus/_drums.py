"""Stage drums: Hydrogen kits and Sonic Pi samples sequenced into grooves."""
from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ratecontrol import fsutil
from trainer.corpus._common import CorpusConfig, SourceRecord, read_audio, spectral_bandwidth, write_flac
from trainer.corpus._packages import copyright_path, fetch_package, licence_for

__all__ = ["DRUM_PACKAGES", "arrange_pattern", "stage_drums"]

DRUM_PACKAGES = ("hydrogen-drumkits", "sonic-pi-samples")


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
        a, sr = read_audio(path)
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
    hcopy = copyright_path(hroot, "hydrogen-drumkits")
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
    scopy = copyright_path(sroot, "sonic-pi-samples")
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
            bed_audio, sr = read_audio(loopf)
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
            write_flac(dst, audio, 44100)
        audio, sr = read_audio(dst)
        bw, roll = spectral_bandwidth(audio, sr)
        kept.append(dataclasses.asdict(SourceRecord(
            id=f"drums/{vid}", path=str(dst.relative_to(out)), kind="drums", package=pkg,
            licence=lic, duration_s=round(audio.shape[1] / sr, 3), sample_rate_hz=sr,
            channels=audio.shape[0], bitrate_kbps=None, bandwidth_995_hz=round(bw),
            rolloff_60db_hz=round(roll), sha1=fsutil.file_digest(dst, "sha1"),
            note=f"{note}; {bpm:.1f} bpm")))
    return kept
