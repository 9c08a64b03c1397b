"""Reproduce ratecontrol's quality model: build data, train, evaluate, export.

Run ``python -m trainer --help``.
"""
