"""Datasets: the embedded synth-events generator and the annotation/list loader."""
