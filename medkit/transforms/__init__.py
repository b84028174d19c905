"""MONAI-compatible transforms MONAI lacks: registration-based augmentation.

CT windowing is MONAI's own ``ScaleIntensityRange(d)`` (``a_min``/``a_max`` the window
in HU, ``b_min=0``, ``b_max=1``, ``clip=True``); there is no copy of it here.

Array transforms take channel-first ``(C, X, Y, Z)`` tensors; the ``...d``
dictionary wrappers act on sample dicts (keys of the data contract). Random
transforms sample their parameters and call the deterministic one, so a seed
fixes the output. One transform per file; torch is imported by those files,
not here.
"""

from .field_bank import FieldBank, FieldRecord
from .rand_registration_augment import RandRegistrationAugment, RandRegistrationAugmentd
from .registration import RegistrationConfig, register_pair
from .registration_augment import RegistrationAugment, RegistrationAugmentd

__all__ = [
    "FieldBank", "FieldRecord", "RandRegistrationAugment", "RandRegistrationAugmentd",
    "RegistrationAugment", "RegistrationAugmentd", "RegistrationConfig", "register_pair",
]
