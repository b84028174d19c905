"""Embedded benchmark data with exact ground truth, generated from a seed.

Modules (each has a ``*Config`` dataclass and a ``generate_*`` function that
writes a dataset folder and returns a summary dict):

- :mod:`medkit.synth.liver_ct`: abdominal CT with Couinaud segments (nnU-Net layout, optional DICOM).
- :mod:`medkit.synth.motion`: 4D respiratory and longitudinal CT with exact fields and landmarks.
- :mod:`medkit.synth.cxr`: chest radiographs with reports and CheXpert labels (R2Gen layout).
- :mod:`medkit.synth.cases`: clinical cases and patient personas from a condition knowledge base.

Nothing is imported here eagerly; import the module you need.
"""
