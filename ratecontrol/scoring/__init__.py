"""Scoring backends (exact ViSQOL, learned model) behind one protocol and registry."""
from ratecontrol.scoring.base import DEFAULT_SCORER, Scorer, available_scorers, get_scorer, register_scorer
from ratecontrol.scoring.pooling import DEFAULT_POOL, pool

__all__ = ["Scorer", "register_scorer", "get_scorer", "available_scorers", "DEFAULT_SCORER", "DEFAULT_POOL", "pool"]
