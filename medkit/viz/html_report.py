"""A self-contained HTML run report (``report.html``) from plain data.

A report is a title, a manifest table and a list of :class:`Section`; a section
holds blocks: paragraphs, tables (list of dict rows), images (PNG files embedded in
the page as ``data:`` URIs, so the one file can be moved, e-mailed or archived and
still shows every figure), preformatted text (transcripts, generated reports) and
metric definitions. Every string is HTML-escaped; no script, no external resource
(fonts, CSS, JS, images) is referenced, so the page opens offline, in any browser,
with nothing to block.

    from medkit.viz.html_report import Section, write_report
    write_report(run / "report.html", "medkit demo", sections, manifest=manifest)
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.atomic import write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2430;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:2px solid #dfe4ea;padding-bottom:.2rem;
margin-top:2.2rem}h3{font-size:1.05rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #d5dbe3;padding:.25rem .55rem;
text-align:left;vertical-align:top}th{background:#f1f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:.8rem 0}figure img{max-width:100%;border:1px solid #d5dbe3}figcaption{font-size:.85rem;color:#4a5568}
img.upscaled{image-rendering:pixelated;height:auto}
pre{background:#f6f8fa;border:1px solid #e1e6ec;padding:.6rem;white-space:pre-wrap;font-size:.85rem}
.note{background:#fff8e1;border-left:4px solid #f0b429;padding:.4rem .8rem}
dl{font-size:.9rem}dt{font-weight:600}dd{margin:0 0 .4rem 1.2rem}
nav a{margin-right:.8rem}
"""


@dataclass
class Section:
    """One part of the report. ``blocks`` are ``(kind, payload)`` pairs, kinds:
    ``text`` (str), ``note`` (str, highlighted), ``table`` (list of dict rows),
    ``image`` ((path, caption, width)), ``pre`` ((title, text)), ``definitions`` (dict name -> text),
    ``heading`` (str, a sub-heading inside the section)."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def text(self, s: str) -> Section:
        self.blocks.append(("text", s))
        return self

    def heading(self, s: str) -> Section:
        self.blocks.append(("heading", s))
        return self

    def note(self, s: str) -> Section:
        self.blocks.append(("note", s))
        return self

    def table(self, rows: list[dict], caption: str = "") -> Section:
        self.blocks.append(("table", (rows, caption)))
        return self

    def image(self, path: str | Path, caption: str = "", width: int | None = None) -> Section:
        """A PNG/JPEG, embedded. ``width``: display width in CSS pixels (a small radiograph is
        shown larger, pixels kept sharp), default the image's own."""
        self.blocks.append(("image", (Path(path), caption, width)))
        return self

    def pre(self, title: str, text: str) -> Section:
        self.blocks.append(("pre", (title, text)))
        return self

    def definitions(self, defs: dict[str, str]) -> Section:
        self.blocks.append(("definitions", defs))
        return self


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'<td class="num">{v}</td>'
    return f"<td>{_e('' if v is None else v)}</td>"


def _table(rows: list[dict], caption: str) -> str:
    if not rows:
        return "<p><em>(no rows)</em></p>"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in cols) + "</tr>" for r in rows)
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-") or "section"


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


def _figure(base: Path, path: Path, caption: str, width: int | None = None) -> str:
    """``<figure>`` with the image file embedded as a base64 ``data:`` URI."""
    full = path if path.is_absolute() else base / path
    if not full.exists():
        raise FileNotFoundError(f"report image missing: {full}")
    mime = _MIME.get(full.suffix.lower())
    if mime is None:
        raise ValueError(f"{full}: report images are PNG, JPEG or GIF")
    data = base64.b64encode(full.read_bytes()).decode("ascii")
    size = f" class='upscaled' style='width:{int(width)}px'" if width else ""
    return (f"<figure><img src='data:{mime};base64,{data}' alt='{_e(caption or full.name)}'{size}>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def render_report(title: str, sections: list[Section], *, base: Path, manifest: dict | None = None,
                  subtitle: str = "") -> str:
    """The HTML text. Images are read from disk (relative paths from ``base``, the report's
    folder) and embedded; an image that does not exist raises ``FileNotFoundError`` (a report
    never shows a broken image)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>"]
    if subtitle:
        parts.append(f"<p>{_e(subtitle)}</p>")
    parts.append("<nav>" + "".join(f"<a href='#{_slug(s.title)}'>{_e(s.title)}</a>" for s in sections)
                 + ("<a href='#manifest'>Manifest</a>" if manifest else "") + "</nav>")
    for s in sections:
        parts.append(f"<h2 id='{_slug(s.title)}'>{_e(s.title)}</h2>")
        for kind, p in s.blocks:
            if kind == "text":
                parts.append(f"<p>{_e(p)}</p>")
            elif kind == "heading":
                parts.append(f"<h3>{_e(p)}</h3>")
            elif kind == "note":
                parts.append(f"<p class='note'>{_e(p)}</p>")
            elif kind == "table":
                parts.append(_table(*p))
            elif kind == "image":
                parts.append(_figure(base, *p))
            elif kind == "pre":
                t, text = p
                parts.append(f"<h3>{_e(t)}</h3><pre>{_e(text)}</pre>")
            elif kind == "definitions":
                parts.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in p.items()) + "</dl>")
            else:
                raise ValueError(f"unknown block kind {kind!r}")
    if manifest:
        rows = [{"key": k, "value": v if isinstance(v, (str, int, float)) else repr(v)} for k, v in manifest.items()]
        parts.append("<h2 id='manifest'>Manifest</h2>" + _table(rows, "versions, device, seed, timings"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, title: str, sections: list[Section], *, manifest: dict | None = None,
                 subtitle: str = "") -> Path:
    """Render and write ``path`` atomically; returns the path."""
    path = Path(path)
    return write_text(path, render_report(title, sections, base=path.parent, manifest=manifest, subtitle=subtitle))
