"""Couinaud segmentation of the liver on CT: LiverFormer (arXiv 2411.02815).

Modules: :mod:`.network` (the hybrid CNN-Transformer), :mod:`.train` (training
from a pipeline YAML into a run folder), :mod:`.predict` (``medkit segment``),
:mod:`.data` (MONAI transform chains and case loading), :mod:`.models` (build
LiverFormer or a MONAI peer from a config). Heavy imports stay inside those modules.
"""

#: Couinaud label value -> segment name (0 is background).
COUINAUD_NAMES = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}
