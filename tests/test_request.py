"""issue 27 item 3: one frozen EncodeRequest per api.encode call, built in the front
door with the input inspected, the target checked and the preset resolved, in the order
the errors came before it existed."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import ratecontrol
from ratecontrol import errors
from ratecontrol.options import Options
from ratecontrol.probing.request import EncodeRequest


def test_a_missing_input_is_named_before_a_bad_target_or_codec(tmp_path):
    with pytest.raises(errors.InputNotFoundError):
        ratecontrol.encode(tmp_path / "nothing.wav", target_mos=9.0, codec="no-such-codec")


def test_the_request_is_frozen_and_holds_what_was_checked(tmp_path):
    import numpy as np
    import soundfile as sf

    src = tmp_path / "tone.wav"
    t = np.arange(44100 * 2) / 44100
    sf.write(src, 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    req = EncodeRequest.build(str(src), None, 4, "auto", Options(), False)
    assert req.input_path == src and req.preset is None and req.target_mos == 4.0
    assert isinstance(req.target_mos, float) and req.info.sample_rate_hz == 44100
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.output = Path("x.opus")  # type: ignore[misc]
    with pytest.raises(errors.PresetError):
        EncodeRequest.build(src, None, 4.0, "no-such-codec", Options(), False)


def _tone(path: Path) -> Path:
    import numpy as np
    import soundfile as sf

    t = np.arange(44100 * 2) / 44100
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    return path


def test_the_ladder_request_is_frozen_and_holds_what_was_checked(tmp_path):
    from ratecontrol.probing.request import LadderRequest

    src = _tone(tmp_path / "tone.wav")
    req = LadderRequest.build(str(src), None, [4.5, 3, 4.5], "opus", Options(), False)
    assert req.input_path == src and req.out_dir == tmp_path and req.preset.name == "opus"
    assert req.targets_mos == (3.0, 4.5) and all(isinstance(t, float) for t in req.targets_mos)
    assert req.info.sample_rate_hz == 44100 and req.metadata is None and req.report is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.targets_mos = (4.0,)  # type: ignore[misc]


@pytest.mark.parametrize("call, error, match", [
    # the stream options are refused first, then the input, the targets, the codec, the folder
    (lambda src, d: dict(source=d / "nothing.wav", out_dir=d / "no", targets=[9.0], codec="no-such-codec",
                         audio_stream=1), errors.UsageError, "audio_stream"),
    (lambda src, d: dict(source=d / "nothing.wav", out_dir=d / "no", targets=[9.0], codec="no-such-codec"),
     errors.InputNotFoundError, None),
    (lambda src, d: dict(source=src, out_dir=d / "no", targets="4", codec="no-such-codec"),
     errors.UsageError, "targets must be a list"),
    (lambda src, d: dict(source=src, out_dir=d / "no", targets=[4.0, 9.0], codec="no-such-codec"),
     errors.UsageError, "outside the MOS scale"),
    (lambda src, d: dict(source=src, out_dir=d / "no", targets=[], codec="no-such-codec"),
     errors.UsageError, "at least one target"),
    (lambda src, d: dict(source=src, out_dir=d / "no", targets=[4.0], codec="no-such-codec"),
     errors.PresetError, None),
    (lambda src, d: dict(source=src, out_dir=src, targets=[4.0], codec="opus"),
     errors.OutputError, "is a file; give a folder"),
    (lambda src, d: dict(source=src, out_dir=d / "no", targets=[4.0], codec="opus"),
     errors.OutputError, "folder does not exist"),
], ids=["stream-options", "input", "targets-type", "target-value", "no-targets", "codec", "folder-file",
        "folder-missing"])
def test_a_ladder_names_its_errors_in_the_old_order(tmp_path, call, error, match):
    src = _tone(tmp_path / "tone.wav")
    kw = call(src, tmp_path)
    with pytest.raises(error, match=match):
        ratecontrol.encode_ladder(kw.pop("source"), kw.pop("out_dir"), cache=False, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tone.wav"]
