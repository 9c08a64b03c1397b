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

One module per stage (this package re-exports the public names)::

    _common.py    CorpusConfig, SourceRecord, spectral_bandwidth(), audio and JSON-lines files
    _packages.py  ensure_tools(), fetch_package() (apt-get download, dpkg-deb -x), licence_for()
    _music.py     stage_music(): game music through the bitrate/bandwidth gate
    _render.py    stage_render(): music21 scores through GM SoundFonts
    _drums.py     stage_drums(), arrange_pattern(): one-shots sequenced into grooves
    _speech.py    stage_speech(): Asterisk prompts joined, espeak-ng passages
    _recipe.py    build_corpus(): the stages in order, then manifest.jsonl and licences/
"""
from __future__ import annotations

from trainer.corpus._common import (CORPUS_EXTENSIONS, KINDS, CorpusConfig, CorpusSummary, SourceRecord,
                                    read_manifest, spectral_bandwidth)
from trainer.corpus._drums import DRUM_PACKAGES, arrange_pattern, stage_drums
from trainer.corpus._music import MUSIC_PACKAGES, stage_music
from trainer.corpus._packages import HAND_LICENCES, ensure_tools, fetch_package, licence_for
from trainer.corpus._recipe import STAGES, build_corpus
from trainer.corpus._render import MUSIC21_LICENCE, SOUNDFONTS, stage_render
from trainer.corpus._speech import SPEECH_PACKAGES, stage_speech

__all__ = [
    "CORPUS_EXTENSIONS",
    "CorpusConfig",
    "CorpusSummary",
    "DRUM_PACKAGES",
    "HAND_LICENCES",
    "KINDS",
    "MUSIC21_LICENCE",
    "MUSIC_PACKAGES",
    "SOUNDFONTS",
    "SPEECH_PACKAGES",
    "STAGES",
    "SourceRecord",
    "arrange_pattern",
    "build_corpus",
    "ensure_tools",
    "fetch_package",
    "licence_for",
    "read_manifest",
    "spectral_bandwidth",
    "stage_drums",
    "stage_music",
    "stage_render",
    "stage_speech",
]
