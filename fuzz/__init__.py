"""Fuzz targets for nnback and the runner that drives them (see fuzz/run.py)."""
