"""Shared fixtures: a seeded RNG and the real recordings in ../shared/audio."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_AUDIO = Path(__file__).resolve().parents[1].parent / "shared" / "audio"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    if not SHARED_AUDIO.is_dir():
        pytest.skip("../shared/audio is not present")
    return SHARED_AUDIO
