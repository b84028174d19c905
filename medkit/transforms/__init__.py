"""MONAI-compatible transforms MONAI lacks: CT windows, registration-based augmentation.

Array transforms take channel-first ``(C, X, Y, Z)`` tensors; the ``...d``
dictionary wrappers act on sample dicts (keys of the data contract). Random
transforms sample their parameters and call the deterministic one, so a seed
fixes the output. One transform per file; torch is imported by those files,
not here.
"""

from .ct_window import CTWindow, CTWindowd
from .field_bank import FieldBank, FieldRecord
from .rand_registration_augment import RandRegistrationAugment, RandRegistrationAugmentd
from .registration import RegistrationConfig, register_pair
from .registration_augment import RegistrationAugment, RegistrationAugmentd

__all__ = [
    "CTWindow", "CTWindowd", "FieldBank", "FieldRecord", "RandRegistrationAugment", "RandRegistrationAugmentd",
    "RegistrationAugment", "RegistrationAugmentd", "RegistrationConfig", "register_pair",
]
