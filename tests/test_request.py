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
