"""The HTML run report: escaped text, embedded images (a moved or e-mailed page keeps them),
refused broken images."""

import pytest
from PIL import Image

from medkit.viz.html_report import Section, render_report, write_report


def test_report_escapes_text_embeds_images_and_writes_atomically(tmp_path):
    (tmp_path / "overlays").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "overlays" / "a.png")
    s = (Section("Segmentation <CT>")
         .text("Dice & HD95")
         .table([{"segment": "I", "dice": 0.8123456, "n": 3}, {"segment": "II", "extra": None}], "per segment")
         .image(tmp_path / "overlays" / "a.png", "axial/coronal/sagittal")
         .pre("Report", "<script>alert(1)</script>")
         .definitions({"Dice": "2|A∩B| / (|A|+|B|)"}))
    out = write_report(tmp_path / "report.html", "demo", [s], manifest={"seed": 0, "device": "cpu"})
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "Segmentation &lt;CT&gt;" in text and "Dice &amp; HD95" in text
    import base64

    png = base64.b64encode((tmp_path / "overlays" / "a.png").read_bytes()).decode()
    assert f"src='data:image/png;base64,{png}'" in text  # embedded: the page alone shows the figure
    assert "overlays/a.png" not in text
    # The page still shows the image after the run folder's files are gone (moved, e-mailed).
    moved = tmp_path / "elsewhere.html"
    out.rename(moved)
    (tmp_path / "overlays" / "a.png").unlink()
    assert png in moved.read_text()
    assert ">0.8123<" in text and "<th>extra</th>" in text  # columns united across rows
    assert "http" not in text  # nothing external to load
    assert not list(tmp_path.glob("*.tmp*"))


def test_missing_image_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        render_report("x", [Section("s").image(tmp_path / "nope.png")], base=tmp_path)


def test_heading_block_and_images_load_eagerly(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    text = render_report("x", [Section("s").heading("case <1>").image(tmp_path / "a.png", "c")], base=tmp_path)
    assert "<h3>case &lt;1&gt;</h3>" in text
    # No lazy loading: a headless browser (and print) must get every image without scrolling.
    assert "loading=" not in text
