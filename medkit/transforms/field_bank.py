"""A store of registration fields (atlas -> target) with provenance.

On disk (optional; a bank can live in memory only)::

    <root>/index.json                        one record per field (below)
    <root>/{atlas}__{target}.nii.gz          (X, Y, Z, 3) displacement in RAS mm on the
                                             atlas' preprocessed grid, affine = that grid

Each record keeps where a field came from: atlas and target case ids, the
registration method and its config, the similarity before/after, Jacobian
statistics, the medkit version and the time, so an augmented training set can be
traced back to the registrations that made it.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch


@dataclass
class FieldRecord:
    """Provenance of one field. ``file`` is relative to the bank root (``None`` in memory)."""

    atlas_id: str
    target_id: str
    file: str | None = None
    method: str = "medkit.transforms.registration.register_pair"
    info: dict = field(default_factory=dict)
    created: str = ""


class FieldBank:
    """Fields by atlas id. ``root=None`` keeps everything in memory."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else None
        self.records: list[FieldRecord] = []
        self._fields: dict[tuple[str, str], torch.Tensor] = {}
        self.affine: np.ndarray | None = None
        if self.root is not None and (self.root / "index.json").exists():
            data = json.loads((self.root / "index.json").read_text())
            self.affine = np.asarray(data["affine"], dtype=np.float64) if data.get("affine") else None
            self.records = [FieldRecord(**r) for r in data["records"]]

    def add(self, atlas_id: str, target_id: str, ddf_mm: torch.Tensor, affine, info: dict | None = None) -> FieldRecord:
        """Store ``ddf_mm`` ``(3, X, Y, Z)`` (mm, atlas grid with voxel->mm ``affine``)."""
        from .. import __version__

        rec = FieldRecord(atlas_id, target_id, info=dict(info or {}, medkit_version=__version__),
                          created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        aff = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
        self.affine = aff
        ddf = torch.as_tensor(ddf_mm, dtype=torch.float32).detach().cpu()
        self._fields[(atlas_id, target_id)] = ddf
        if self.root is not None:
            from monai.data import MetaTensor

            from ..io import save_volume

            rec.file = f"{atlas_id}__{target_id}.nii.gz"
            save_volume(MetaTensor(ddf, affine=torch.as_tensor(aff)), self.root / rec.file)
        self.records = [r for r in self.records if (r.atlas_id, r.target_id) != (atlas_id, target_id)] + [rec]
        self.save_index()
        return rec

    def save_index(self) -> None:
        if self.root is None:
            return
        from ..io import write_json

        write_json(self.root / "index.json", {
            "convention": "warped(x) = atlas(x + u(x)); u in RAS mm, (X, Y, Z, 3) on disk",
            "affine": None if self.affine is None else self.affine.tolist(),
            "records": [asdict(r) for r in self.records],
        })

    def atlases(self) -> list[str]:
        return sorted({r.atlas_id for r in self.records})

    def for_atlas(self, atlas_id: str) -> list[FieldRecord]:
        return [r for r in self.records if r.atlas_id == atlas_id]

    def load(self, rec: FieldRecord) -> torch.Tensor:
        """The field ``(3, X, Y, Z)`` in mm."""
        key = (rec.atlas_id, rec.target_id)
        if key not in self._fields:
            if self.root is None or rec.file is None:
                raise KeyError(f"field {key} is not in this bank")
            import nibabel as nib

            arr = np.asarray(nib.load(str(self.root / rec.file)).dataobj, dtype=np.float32)
            self._fields[key] = torch.from_numpy(np.moveaxis(arr, -1, 0).copy())
        return self._fields[key]

    def __len__(self) -> int:
        return len(self.records)
