"""ST-NeRP: spatio-temporal deformation with a prior-embedding INR (arXiv 2410.19283).

- :mod:`.model`: the reference INR (prior embedding) and the deformation INR.
- :mod:`.losses`: similarity and regularisers on sampled points (pure functions).
- :mod:`.fit`: the fitting loop and dense prediction.
- :mod:`.sequence`: reading 4D NIfTI / phase folders / DICOM series / DIR-Lab / 4D-Lung.
- :mod:`.pipeline`: ``medkit deform``.
- :mod:`.baselines`: peers for the benchmark (SimpleITK B-spline / demons, pairwise INR).
"""
