"""DICOM-SEG output: geometry against the source pixels, read-back with highdicom, privacy defaults."""

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medkit.cli import app
from medkit.segmentation import COUINAUD_NAMES
from medkit.segmentation.dicom_seg import labels_on_source_slices, source_datasets, write_dicom_seg

from .conftest import render_small

PHI = {"PatientName": "Doe^Jane", "PatientID": "MRN-99812", "PatientBirthDate": "19500101",
       "AccessionNumber": "ACC-55501"}


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory):
    from medkit.io import load_volume
    from medkit.io.dicom_write import write_dicom_series

    d = tmp_path_factory.mktemp("dcm")
    case = render_small(2)
    # Flip x and z of the RAS affine: the series then runs in an unusual order and direction.
    aff = case.affine.copy()
    aff[:, 0] *= -1
    aff[:, 2] *= -1
    write_dicom_series(case.image.astype(np.float64), d / "ct", affine=aff, patient=PHI)
    vol = load_volume(d / "ct")
    return d / "ct", vol


def test_source_slice_mapping_reproduces_the_stored_pixels(dicom_case):
    """Sampling the loaded volume at each source file's pixel centres gives back that file's
    own pixel values (rescaled): the mapping SEG frames use is the series' true geometry."""
    folder, vol = dicom_case
    src = source_datasets(folder, None)
    got = labels_on_source_slices(vol[0].numpy().astype(np.float32), np.asarray(vol.affine), src)
    for k, header in enumerate(src):
        ds = pydicom.dcmread(header.filename)
        ref = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_allclose(got[k], ref, atol=1.0)


def test_dicom_seg_reads_back_with_highdicom_and_blanks_identity(dicom_case, tmp_path):
    import highdicom as hd

    folder, vol = dicom_case
    labels = np.zeros(vol.shape[1:], dtype=np.uint8)
    labels[5:15, 8:20, 3:9] = 2
    labels[20:30, 8:20, 10:16] = 7
    out = write_dicom_seg(labels, np.asarray(vol.affine), folder, tmp_path / "x.seg.dcm", COUINAUD_NAMES)
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Couinaud II", "Couinaud VII"]
    src = source_datasets(folder, None)
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    uids = [ds.SOPInstanceUID for ds in src]
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                             relabel=True, ignore_spatial_locations=True,
                                             skip_overlap_checks=True)
    expect = labels_on_source_slices(labels, np.asarray(vol.affine), src)
    remap = {0: 0, 2: 1, 7: 2}
    np.testing.assert_array_equal(back, np.vectorize(remap.get)(expect))
    raw = out.read_bytes()
    for value in PHI.values():
        assert value.encode() not in raw and value.replace("^", " ").encode() not in raw
    ds = pydicom.dcmread(out)
    assert str(ds.PatientName) == "" and ds.PatientID == ""


def test_dicom_seg_copy_identity_keeps_the_patient(dicom_case, tmp_path):
    folder, vol = dicom_case
    labels = np.zeros(vol.shape[1:], dtype=np.uint8)
    labels[5:15, 8:20, 3:9] = 1
    out = write_dicom_seg(labels, np.asarray(vol.affine), folder, tmp_path / "y.seg.dcm", COUINAUD_NAMES,
                          copy_identity=True)
    assert pydicom.dcmread(out).PatientID == PHI["PatientID"]


def test_dicom_seg_refuses_nifti_input_before_writing(tmp_path, tiny_model_dir):
    from medkit.io import save_volume

    case = render_small(1)
    import torch
    from monai.data import MetaTensor

    save_volume(MetaTensor(torch.from_numpy(case.image[None].astype(np.float32)), affine=torch.as_tensor(case.affine)),
                tmp_path / "ct.nii.gz")
    r = CliRunner().invoke(app, ["segment", "-i", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "out"),
                                 "--model", str(tiny_model_dir), "--output-type", "dicom-seg", "--device", "cpu"])
    assert r.exit_code == 2
    assert "needs a DICOM folder" in r.output and "ct.nii.gz" in r.output
    assert not (tmp_path / "out").exists()


def test_copy_identity_copies_exactly_what_its_help_lists(tmp_path):
    """Every identifying attribute of the source gets a unique marker; with --copy-identity the SEG
    carries exactly the markers of COPIED_WITH_IDENTITY (the list the help prints), without it none."""
    from medkit.io import load_volume
    from medkit.io.dicom_write import write_dicom_series
    from medkit.segmentation.dicom_seg import COPIED_WITH_IDENTITY

    markers = {"PatientName": "ZZNAME^QQ", "PatientID": "IDQ81723", "PatientBirthDate": "19011231",
               "PatientSex": "O", "AccessionNumber": "ACCQ5531", "StudyID": "SIDQ9912", "StudyDate": "19020304",
               "StudyTime": "010203.456", "ReferringPhysicianName": "REFQ^DOC", "StudyDescription": "STUDYDESCQ77",
               "PatientAge": "077Y", "PatientWeight": "71.3", "PatientAddress": "ADDRQ 12",
               "OtherPatientIDs": "OPIDQ44", "InstitutionName": "INSTQ", "InstitutionAddress": "INSTADDRQ",
               "InstitutionalDepartmentName": "DEPTQ", "StationName": "STATIONQ", "OperatorsName": "OPQ^ONE",
               "PerformingPhysicianName": "PERFQ^DOC", "RequestingPhysician": "REQQ^DOC",
               "ImageComments": "COMMENTQ 55", "PatientSize": "1.77", "EthnicGroup": "ETHQ",
               "PatientComments": "PCOMMENTQ", "AdditionalPatientHistory": "HISTQ", "Occupation": "OCCQ",
               "PatientBirthTime": "040506", "PatientMotherBirthName": "MOTHERQ", "MilitaryRank": "RANKQ",
               "PatientTelephoneNumbers": "5550177", "SeriesDescription": "SERIESDESCQ", "ProtocolName": "PROTQ",
               "BodyPartExamined": "ABDOMENQ", "PerformedProcedureStepDescription": "PPSQ",
               "RequestedProcedureDescription": "RPDQ", "DeviceSerialNumber": "SERIALQ", "Manufacturer": "MANUQ"}
    patient = {k: v for k, v in markers.items() if k.startswith(("Patient", "OtherPatient"))}
    extra = {k: v for k, v in markers.items() if k not in patient}
    case = render_small(0)
    write_dicom_series(case.image.astype(np.float64), tmp_path / "ct", affine=case.affine, patient=patient, extra=extra)
    vol = load_volume(tmp_path / "ct")
    labels = np.zeros(vol.shape[1:], np.uint8)
    labels[10:20, 10:20, 5:10] = 4
    found = {}
    for copy in (False, True):
        out = write_dicom_seg(labels, np.asarray(vol.affine), tmp_path / "ct", tmp_path / f"{copy}.seg.dcm",
                              COUINAUD_NAMES, copy_identity=copy)
        ds = pydicom.dcmread(out)
        raw = out.read_bytes()
        found[copy] = {k for k, v in markers.items()
                       if (len(v) > 2 and v.encode() in raw) or str(ds.get(k, "") or "") == v}
    assert found[False] == set()
    assert found[True] == set(COPIED_WITH_IDENTITY)
    help_text = CliRunner().invoke(app, ["segment", "--help"], env={"COLUMNS": "400"}).output
    flat = " ".join(help_text.replace("│", " ").split())
    assert ("copy these source attributes into the SEG: " + ", ".join(COPIED_WITH_IDENTITY)) in flat
