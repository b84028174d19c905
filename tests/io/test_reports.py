"""R2Gen-style report datasets: loading, R2Gen's text normalisation, sections, malformed entries."""

from __future__ import annotations

import json

import pytest

from medkit.io import ReportDatasetError, clean_report, load_report_dataset, split_sections


def _write(tmp_path, data, images=("p1/0.png", "p1/1.png", "p2/0.png", "p2/1.png")):
    for rel in images:
        f = tmp_path / "images" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"\x89PNG")
    p = tmp_path / "annotation.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def _iu(**over):
    e = {"id": "CXR1_1_IM-0001", "report": "The heart is normal. No effusion.",
         "image_path": ["p1/0.png", "p1/1.png"], "split": "train"}
    e.update(over)
    return e


def test_iu_xray_style_two_images(tmp_path):
    p = _write(tmp_path, {
        "train": [_iu()],
        "test": [_iu(id="CXR2_1_IM-0002", image_path=["p2/0.png", "p2/1.png"], split="test",
                     labels={"Cardiomegaly": 1, "Edema": -1})],
    })
    ds = load_report_dataset(p)
    assert set(ds) == {"train", "test"}
    e = ds["train"][0]
    assert e.id == "CXR1_1_IM-0001" and e.split == "train" and e.report == "The heart is normal. No effusion."
    assert [q.relative_to(tmp_path / "images").as_posix() for q in e.image_paths] == ["p1/0.png", "p1/1.png"]
    assert ds["test"][0].labels == {"Cardiomegaly": 1, "Edema": -1}
    cleaned = load_report_dataset(tmp_path, clean=True)  # a folder works; clean applies R2Gen's cleaner
    assert cleaned["train"][0].report == "the heart is normal . no effusion ."


def test_mimic_style_entry(tmp_path):
    e = {"id": "02aa804e-bde0afdd", "study_id": 50414267, "subject_id": 10000032,
         "report": "FINDINGS:\n\nThe lungs are clear.  No pneumothorax.", "image_path": ["p2/0.png"],
         "split": "val"}
    ds = load_report_dataset(_write(tmp_path, {"val": [e]}), dataset="mimic_cxr", clean=True)
    row = ds["val"][0]
    assert row.extra == {"study_id": 50414267, "subject_id": 10000032}
    assert row.report == "findings the lungs are clear . no pneumothorax ."


def test_clean_report_iu_by_hand():
    # '..' -> '.', numbering '1. ' dropped and ' 2. ' -> '. ', lower-case, split at '. ':
    #   ["the heart is normal", "no effusion/pneumothorax."]
    # then '/' and the punctuation class are deleted per sentence, joined by ' . ', closed by ' .'.
    assert clean_report("1. The heart is normal.. 2. No effusion/pneumothorax.") == (
        "the heart is normal . no effusionpneumothorax ."
    )
    # R2Gen's class [.,?;*!%^&_+():-\[\]{}] holds the *range* ':'..'[' (so '<', '=' go) but
    # not '-' itself; the two spaces around the deleted '<=' stay.
    assert clean_report("Heart size <= normal, T-spine OK.") == "heart size  normal t-spine ok ."
    # Empty sentences are kept (R2Gen compares a str to [] so its filter never drops one).
    assert clean_report("No acute disease. . Stable.") == "no acute disease .  . stable ."


def test_clean_report_mimic_by_hand():
    # '\n' -> ' ', '___' -> '_', double spaces collapsed, then split at '. ':
    #   ["findings: the lungs are clear", "no pneumothorax", "_ heart normal."]
    # The sentence is stripped *before* '_' is deleted, so " heart normal" keeps its space.
    text = "FINDINGS:\n\nThe lungs are clear.  No pneumothorax.\n___ Heart normal."
    assert clean_report(text, "mimic_cxr") == "findings the lungs are clear . no pneumothorax .  heart normal ."


def test_split_sections_mimic_like():
    text = (
        "EXAMINATION: CHEST (PA AND LAT)\n\nINDICATION: ___ with cough.\n\n"
        "FINDINGS: \n The lungs are clear.\n No effusion.\n\nIMPRESSION: \n No acute process.\n"
    )
    s = split_sections(text)
    assert list(s) == ["examination", "indication", "findings", "impression"]
    assert s["findings"] == "The lungs are clear. No effusion."
    assert s["impression"] == "No acute process."
    assert split_sections("Free text only.") == {"preamble": "Free text only."}


@pytest.mark.parametrize("name,split,words", [
    ("missing id", {"train": [_iu(id=None)]}, ["train[0]", "no 'id'"]),
    ("report not a string", {"train": [_iu(report=["a"])]}, ["train[0]", "CXR1_1_IM-0001", "'report' must be a string"]),
    ("empty image_path", {"train": [_iu(image_path=[])]}, ["train[0]", "image_path"]),
    ("duplicate id", {"train": [_iu()], "test": [_iu(split="test")]}, ["test[0]", "CXR1_1_IM-0001", "repeats"]),
    ("missing image", {"train": [_iu(image_path=["p9/0.png"])]}, ["train[0]", "not found", "p9/0.png"]),
    ("unknown split", {"training": [_iu()]}, ["unknown split", "training"]),
    ("bad labels", {"train": [_iu(labels={"Edema": 2})]}, ["train[0]", "labels"]),
])
def test_malformed_entries(tmp_path, name, split, words):
    p = _write(tmp_path, split)
    with pytest.raises(ReportDatasetError) as ei:
        load_report_dataset(p)
    msg = str(ei.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, msg


def test_bad_json(tmp_path):
    p = _write(tmp_path, '{"train": [')
    with pytest.raises(ReportDatasetError, match="not valid JSON"):
        load_report_dataset(p)
