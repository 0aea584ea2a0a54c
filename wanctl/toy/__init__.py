"""Synthetic data: clips of simple coloured shapes moving over plain or gradient backgrounds."""
