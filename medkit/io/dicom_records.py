"""What a DICOM header scan keeps of a file and a series (no pixels, no PHI): the records
:mod:`medkit.io.dicom` builds and :mod:`medkit.io.dicom_geometry` checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# SOP classes that carry no pixel volume. Anything with PixelData and Rows is
# treated as an image; these are named so the error can say what the file is.
NON_IMAGE_SOP = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan",
    "1.2.840.10008.5.1.4.1.1.481.8": "RT Ion Plan",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.1.3.10": "Media Storage Directory (DICOMDIR)",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data",
}


@dataclass
class DicomInstance:
    """What the header scan keeps of one file (no pixels, no PHI)."""

    path: Path
    series_uid: str
    sop_class: str
    modality: str
    description: str
    transfer_syntax: str
    rows: int
    cols: int
    frames: int
    samples: int
    photometric: str  # PhotometricInterpretation ("" when absent)
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    slice_thickness: float | None
    acquisition_time: str | None
    instance_number: int | None
    safe: dict = field(default_factory=dict)
    series_number: int | None = None  # SeriesNumber: tells the series of one study apart in case ids

    @property
    def is_image(self) -> bool:
        return self.sop_class not in NON_IMAGE_SOP and self.rows > 0 and self.cols > 0


@dataclass
class DicomSeries:
    """One series: its instances and the summary a user needs to choose it."""

    uid: str
    instances: list[DicomInstance]

    @property
    def description(self) -> str:
        return self.instances[0].description

    @property
    def modality(self) -> str:
        return self.instances[0].modality

    def __len__(self) -> int:
        return sum(i.frames for i in self.instances)
