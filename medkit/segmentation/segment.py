"""``medkit segment`` and :func:`medkit.segment`: one function for the command and for Python.

Input: a CT as NIfTI/NRRD/MHA, a DICOM folder, file or zip, or a folder of cases
(:func:`medkit.io.discover_cases`: NIfTI files, DICOM studies, nnU-Net or Decathlon
task folders). Case ids come from the input's names or ``case_id``, never from header
text.

A folder is streamed: every case's header is read and checked first (shape, geometry,
modality, series UID, the output files it would write), so a bad case or an output that
exists stops the run before anything is written; then the cases are loaded, segmented
and written one at a time, so memory holds one volume whatever the number of cases.

Output folder (:class:`medkit.io.outputs.OutputFolder`; runs accumulate)::

    {case}.nii.gz            labels 0..8 (uint8) in the input's geometry
    {case}.seg.dcm           DICOM Segmentation (``output_type`` dicom-seg / both)
    overlays/{case}.png      axial, coronal, sagittal overlay with a key
    statistics.csv           per case and segment: voxels, volume (ml), mean HU
    cases.csv                case id -> source path, series UID, output files
    manifest.json            versions, device, model folder sha256, inputs' sha256 (and earlier runs)
    config.yaml              this run's settings
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import MedkitInputError, ModalityError, SeriesNotFoundError
from . import COUINAUD_NAMES

OUTPUT_TYPES = ("nifti", "dicom-seg", "both")
STAT_COLUMNS = ["case_id", "segment", "label", "voxels", "volume_ml", "mean_hu"]


@dataclass
class SegmentConfig:
    """The settings of one ``medkit segment`` run (written to ``config.yaml``)."""

    input: str = ""
    output: str | None = None
    model: str | None = None  # None: the shipped models/liverformer-synthetic
    device: str = "auto"
    fast: bool = False
    series_uid: str | None = None
    output_type: str = "nifti"
    copy_identity: bool = False
    case_id: str | None = None
    overwrite: bool = False


@dataclass
class Segmentation:
    """One case's result.

    Attributes:
        case_id: the case's id (from the input's name, or ``case_id=``).
        volumes_ml: segment name (``I`` .. ``VIII``) -> volume in ml.
        statistics: the case's ``statistics.csv`` rows (voxels, volume_ml, mean_hu per segment).
        paths: what was written: ``labels``, ``dicom_seg``, ``overlay`` (empty without an output folder).
        source: the input path the case came from; ``series_uid``: its DICOM series.
        labels: ``MetaTensor`` ``(1, X, Y, Z)`` of integer labels 0..8 (torch.uint8) with the input's
            affine: held in memory when nothing was written, read back from ``paths["labels"]`` on
            first use otherwise (so a folder of cases never holds every label map at once).
    """

    case_id: str
    volumes_ml: dict[str, float]
    statistics: list[dict]
    paths: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None
    series_uid: str | None = None
    _labels: object = field(default=None, repr=False)

    @property
    def labels(self):
        if self._labels is None and "labels" in self.paths:
            import torch
            from monai.data import MetaTensor

            from ..io import load_volume

            vol = load_volume(self.paths["labels"])
            self._labels = MetaTensor(vol.as_tensor().round().to(torch.uint8), affine=vol.affine, meta=vol.meta)
        return self._labels


def segment(input: str | Path, output: str | Path | None = None, *, model: str | Path | None = None,
            device: str = "auto", fast: bool = False, series_uid: str | None = None, output_type: str = "nifti",
            copy_identity: bool = False, case_id: str | None = None, overwrite: bool = False,
            log: Callable[[str], None] | None = None) -> Segmentation | list[Segmentation]:
    """Segment Couinaud segments I-VIII of the liver on CT (``medkit segment`` is this function).

    Args:
        input: a CT file (NIfTI/NRRD/MHA/DICOM/zip), a DICOM folder, or a folder of cases.
        output: a folder to write into (see the module doc; earlier runs' cases are kept), or
            ``None`` to write nothing and return the labels in memory.
        model: a model folder or training run folder; ``None`` is the shipped model.
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:N``.
        fast: less window overlap (0.25, not 0.5): faster, slightly worse.
        series_uid: the DICOM series to segment when the input holds several.
        output_type: ``nifti``, ``dicom-seg`` (DICOM folder inputs) or ``both``.
        copy_identity: DICOM-SEG only: copy the patient/study identifiers listed in
            :data:`medkit.segmentation.dicom_seg.COPIED_WITH_IDENTITY` (default: written empty).
        case_id: the id of the one case in ``input`` (default: from its name).
        overwrite: replace this run's cases' existing outputs (never another case's).
        log: where progress lines go (default: stderr).

    Returns:
        One :class:`Segmentation` when the input holds one case, else a list of them (sorted by id).

    Raises:
        MedkitInputError: bad input, model, device or output folder, with a message naming the
            file and the problem; nothing is written for a problem found in the headers.
    """
    import sys

    from ..io.cases import discover_cases
    from ..io.header import case_header, load_case
    from ..runs import pick_device

    log = log or (lambda m: print(m, file=sys.stderr))
    if output_type not in OUTPUT_TYPES:
        raise MedkitInputError(None, f"--output-type {output_type!r}: expected one of {', '.join(OUTPUT_TYPES)}")
    if output is None and output_type != "nifti":
        raise MedkitInputError(None, f"--output-type {output_type} writes files: give an output folder")
    cfg = SegmentConfig(str(input), None if output is None else str(output), None if model is None else str(model),
                        device, fast, series_uid, output_type, copy_identity, case_id, overwrite)
    dev = pick_device(device)
    from .predict import load_model

    net, mcfg = load_model(model)
    net = net.to(dev)
    cases = _select(discover_cases(input, case_id=case_id), series_uid, Path(input))
    seen: dict[str, object] = {}
    for c in cases:  # ids must be unique across splits too: they name the output files
        if c.case_id in seen:
            raise MedkitInputError(c.images[0], f"case id {c.case_id} also names {seen[c.case_id]}; outputs would "
                                                "collide (rename one, or segment the splits into separate folders)")
        seen[c.case_id] = c.images[0]
    # Every header first: a bad case stops the run before any output is written.
    for c in cases:
        _check_case(c, case_header(c), output_type)
    folder = None
    if output is not None:
        from ..io.outputs import OutputFolder

        folder = OutputFolder(output, "segment", overwrite=overwrite)
        for c in cases:
            folder.claim(c.case_id, _targets(folder.path, c.case_id, output_type).values(), c.source)
    results, t_all, manifest = [], time.perf_counter(), None
    try:
        for k, c in enumerate(cases, 1):
            vol = load_case(c, modality="CT")  # the value checks (NaN, HU plausibility) need the voxels
            from .predict import check_volume

            check_volume(c.source or c.images[0], vol)
            if folder is not None and manifest is None:  # nothing is written before a case passed every check
                manifest = _start(folder, cfg, dev, model)
            res = _segment_one(c, vol, net, mcfg, dev, fast, folder, output_type, copy_identity,
                               f"{c.case_id} ({k}/{len(cases)})", log)
            if folder is not None:
                from ..runs import sha256_path

                manifest["inputs"][c.case_id] = sha256_path(c.source or c.images[0])
                folder.write_manifest(manifest)
            results.append(res)
            del vol
    except BaseException as e:
        if folder is not None and manifest is not None:
            manifest.update(status="failed", error=str(e)[:500], finished_at=_now())
            folder.write_manifest(manifest)
        elif folder is not None:
            folder.discard_if_unused()
        raise
    if folder is not None and manifest is not None:
        manifest.update(status="completed", finished_at=_now(),
                        timings_s={"total": round(time.perf_counter() - t_all, 3)})
        folder.write_manifest(manifest)
        log(f"{len(results)} case(s) -> {folder.path} (statistics.csv, cases.csv)")
    return results[0] if len(results) == 1 else results


def _now() -> str:
    from ..runs import now_utc

    return now_utc()


def _start(folder, cfg: SegmentConfig, dev, model) -> dict:
    from ..config import dump_config
    from ..io import write_text
    from ..runs import inference_manifest
    from .predict import DEFAULT_MODEL

    write_text(folder.path / "config.yaml", dump_config(cfg))
    manifest = inference_manifest("segment", device=str(dev), model=model if model is not None else DEFAULT_MODEL)
    folder.write_manifest(manifest)
    return manifest


def _select(cases: list, series_uid: str | None, input: Path) -> list:
    """The cases of ``series_uid`` (all when None); a UID that names none of them is refused."""
    if series_uid is None:
        return cases
    keep = [c for c in cases if c.series_uid == series_uid]
    if keep:
        return keep
    have = [f"{c.series_uid} ({c.case_id}, {c.extra.get('modality', '?')}, {c.extra.get('n_slices', '?')} slices)"
            for c in cases if c.series_uid]
    if not have:
        raise SeriesNotFoundError(input, f"--series-uid {series_uid}: the input holds no DICOM series "
                                         "(series UIDs select a series inside a DICOM folder)")
    raise SeriesNotFoundError(input, f"series UID {series_uid} not found; the input holds: " + "; ".join(have))


def _check_case(case, header, output_type: str) -> None:
    from .predict import check_volume

    where = case.source or case.images[0]
    if header.modality not in ("unknown", "CT"):
        files = [i.path for i in case.series.instances] if case.series is not None else []
        if len(files) == 1:  # a stray slice: name the file itself, so it can be found and removed
            where = files[0]
        raise ModalityError(where, f"{header.modality} series {header.series_uid} ({len(files) or '?'} file(s)) "
                                   f"is not CT; Couinaud segmentation reads CT"
                                   + (" (remove it, or choose the CT series with --series-uid)" if case.series_uid
                                      else ""))
    if header.shape is not None:
        try:
            check_volume(where, tuple(header.shape[:3]))
        except MedkitInputError as e:
            if not case.series_uid:
                raise
            # A study's localizer or a thick-slab series: say which series, and how to skip it.
            raise type(e)(where, f"case {case.case_id} (series {case.series_uid}): {e.problem}; choose the CT "
                                 "volume with --series-uid") from None
    if output_type != "nifti" and not (header.format == "dicom" and Path(case.images[0]).is_dir()):
        raise MedkitInputError(case.images[0], f"--output-type {output_type} needs a DICOM folder input "
                                               f"(this is {header.format}); use --output-type nifti")


def _targets(out: Path, case_id: str, output_type: str) -> dict[str, Path]:
    t = {}
    if output_type in ("nifti", "both"):
        t["labels"] = out / f"{case_id}.nii.gz"
    if output_type in ("dicom-seg", "both"):
        t["dicom_seg"] = out / f"{case_id}.seg.dcm"
    t["overlay"] = out / "overlays" / f"{case_id}.png"
    return t


def _segment_one(case, vol, net, mcfg, dev, fast: bool, folder, output_type: str, copy_identity: bool,
                 label: str, log) -> Segmentation:
    import torch
    from monai.data import MetaTensor

    from ..io import save_volume
    from .predict import predict_volume, segment_statistics

    sp = tuple(round(s, 2) for s in vol.meta["original_spacing"])
    log(f"{label}: {tuple(vol.shape[1:])} voxels, spacing {sp} mm")
    t0 = time.perf_counter()
    labels = predict_volume(net, mcfg, vol, dev, fast, description=case.case_id)
    rows = segment_statistics(case.case_id, vol, labels)
    volumes = {r["segment"]: r["volume_ml"] for r in rows}
    seg = MetaTensor(torch.from_numpy(labels)[None], affine=vol.affine)
    res = Segmentation(case.case_id, volumes, rows, source=case.source, series_uid=vol.meta.get("series_uid"))
    if folder is None:
        res._labels = seg
    else:
        paths = _targets(folder.path, case.case_id, output_type)
        if "labels" in paths:
            save_volume(seg, paths["labels"], like=vol)
        if "dicom_seg" in paths:
            from .dicom_seg import write_dicom_seg

            write_dicom_seg(labels, np.asarray(vol.affine), Path(case.images[0]), paths["dicom_seg"], COUINAUD_NAMES,
                            series_uid=vol.meta.get("series_uid"), model_name=mcfg.name, copy_identity=copy_identity)
        from ..viz.overlay import save_overlay

        save_overlay(vol, labels, paths["overlay"], label_names=COUINAUD_NAMES,
                     title=f"{case.case_id}: Couinaud segments (model: {mcfg.name})")
        folder.upsert_csv("statistics.csv", case.case_id, rows, STAT_COLUMNS)
        folder.record(case.case_id, paths.values(), source=case.source, series_uid=res.series_uid,
                      written_at=_now())
        res.paths = paths
    total = sum(volumes.values())
    where = f" -> {res.paths.get('labels') or res.paths.get('dicom_seg')}" if res.paths else ""
    log(f"{label}: liver {total:.0f} ml in {time.perf_counter() - t0:.0f} s{where}")
    return res
