"""Every data card carries the front matter the template requires."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(p for p in (ROOT / "data_cards").glob("*.md") if p.name != "TEMPLATE.md")


def _front_matter(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path.name}: no YAML front matter"
    block = text.split("---\n", 2)[1]
    data = yaml.safe_load(block)
    assert isinstance(data, dict), f"{path.name}: front matter is not a mapping"
    return data


def _required_fields() -> list[str]:
    # The template is the single source of truth for which fields are required.
    fm = _front_matter(ROOT / "data_cards" / "TEMPLATE.md")
    return list(fm)


def test_there_are_cards():
    assert CARDS, "data_cards/ has no cards besides the template"


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.name)
def test_card_front_matter(card):
    fm = _front_matter(card)
    missing = [k for k in _required_fields() if k not in fm]
    assert not missing, f"{card.name}: missing front-matter field(s) {missing}"
    assert fm["name"] == card.stem, f"{card.name}: name {fm['name']!r} must match the file name"
    assert fm["kind"] in ("synthetic", "real")
    assert isinstance(fm["labels"], dict)
    if fm["kind"] == "synthetic":
        assert isinstance(fm["seed"], int)
        assert str(fm["generator"]).startswith("medkit synth")
    body = card.read_text(encoding="utf-8").split("---\n", 2)[2]
    assert "simplification" in body.lower() or "does not model" in body.lower(), (
        f"{card.name}: say what the data does not model"
    )
