"""Layers and tensor operations shared by two or more components (warping, encodings, blocks)."""
