"""Metrics with the definitions the papers use (segmentation, deformation, text, dialogue).

A failure is scored, never dropped: a structure missed by a prediction gets the
worst value and is counted in the mean.
"""
