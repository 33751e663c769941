"""The HTML report of ``evaluate`` and ``demo``: one page, images as small files beside it.

``report.html`` holds an aggregate table (per task and engine with its options), optionally side-by-side
galleries (the demo: every method per photo), and the item table: one row per item with
thumbnails (input, mask, output, reference, ground truth where there is one) and its scores.
Every table sorts by clicking a header (a few lines of inline JS, no network, no library).
Thumbnails are JPEG/PNG files in ``report_files/`` (at most :data:`THUMB` pixels long), each
linking to the full-size image by a path relative to the report when the image is a file.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffcompose.evaluation.catalog import HIGHER_IS_BETTER, SET_METRICS, variant

THUMB = 160
FILES = "report_files"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:center;vertical-align:middle;font-size:13px}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td img{display:block;margin:auto;max-width:128px;max-height:128px}
tr.error td{background:#fee}
.strip{display:inline-block;vertical-align:top;margin:0 2em 0 0}
.strip h3{margin:.6em 0 .3em;font-size:15px}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 1em}
.gallery figure{margin:0;text-align:center;font-size:12px}
.gallery img{max-width:170px;max-height:170px;display:block}
.skip{color:#888;font-size:11px;text-align:left;max-width:18em}
"""

# Sort a table by a clicked header: numbers by data-v (blank last), text otherwise; click again to reverse.
_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click', function(){
    var col = th.cellIndex, tb = th.closest('table').tBodies[0], rows = Array.from(tb.rows);
    var asc = !th.classList.contains('asc');
    th.parentNode.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
    th.classList.add(asc ? 'asc' : 'desc');
    function key(r){var c = r.cells[col]; var v = c.getAttribute('data-v');
      return v === null ? c.textContent.trim() : (v === '' ? NaN : parseFloat(v));}
    rows.sort(function(a, b){var x = key(a), y = key(b);
      if (typeof x === 'number' || typeof y === 'number'){
        if (isNaN(x)) return 1; if (isNaN(y)) return -1; return asc ? x - y : y - x;}
      return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x));});
    rows.forEach(function(r){tb.appendChild(r);});
  });
});
"""

#: Image columns of the item table, in order.
IMAGE_COLUMNS = ("input", "mask", "output", "reference", "ground truth")


def _fmt(v: Any) -> tuple[str, str]:
    """(text shown, sort key) of a score."""
    if v is None or v == "":
        return "–", ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if math.isinf(v):
            return ("∞" if v > 0 else "-∞"), ("1e308" if v > 0 else "-1e308")
        return (f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"), repr(float(v))
    return str(v), ""


class Thumbs:
    """Writes each distinct image once into ``folder/report_files`` and returns its ``<img>`` HTML."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dir = folder / FILES
        self.dir.mkdir(exist_ok=True)
        self.done: dict[Any, str] = {}

    def __call__(self, image: Any, name: str, size: int = THUMB) -> str:
        if image is None:
            return ""
        key = (str(image), size) if isinstance(image, (str, Path)) else (id(image), size)
        if key not in self.done:
            self.done[key] = self._write(image, name, size)
        return self.done[key]

    def _write(self, image: Any, name: str, size: int) -> str:
        try:
            if isinstance(image, (str, Path)):
                with Image.open(image) as im:
                    pil = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
            else:
                arr = np.asarray(image)
                pil = Image.fromarray(arr.astype(np.uint8) * 255 if arr.dtype == bool else arr.astype(np.uint8))
        except Exception as exc:  # a missing or broken file shows as text, not a broken page
            return f"<span class=skip>{html.escape(type(exc).__name__)}</span>"
        pil.thumbnail((size, size), Image.LANCZOS)
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:80]
        fname = f"{len(self.done):05d}_{stem}.png" if pil.mode == "L" else f"{len(self.done):05d}_{stem}.jpg"
        pil.save(self.dir / fname, quality=85) if fname.endswith(".jpg") else pil.save(self.dir / fname)
        img = f'<img src="{FILES}/{fname}" alt="{html.escape(name)}" loading="lazy">'
        if isinstance(image, (str, Path)):
            href = os.path.relpath(Path(image).resolve(), self.folder.resolve())
            img = f'<a href="{html.escape(Path(href).as_posix())}">{img}</a>'
        return img


def item_rows(scored: list[dict]) -> list[dict]:
    """Report rows of evaluated items: fields, images by column, scores, skip reasons."""
    rows = []
    for s in scored:
        inputs = s.get("inputs") or {}
        mask = inputs.get("mask") if isinstance(inputs.get("mask"), str) else None
        rows.append({
            "id": s["id"], "task": s.get("task"), "engine": variant(s), "status": s.get("status"),
            "error": s.get("error"), "seconds": s.get("seconds"),
            "images": {"input": inputs.get("image") or inputs.get("background"), "mask": mask,
                       "output": (s.get("outputs") or [None])[0],
                       "reference": inputs.get("reference") or inputs.get("obj"),
                       "ground truth": s.get("ground_truth")},
            "scores": s.get("scores", {}), "skipped": s.get("skipped", {}),
        })
    return rows


def _header(m: str) -> str:
    if m in SET_METRICS:
        return f"{m} ↓"
    return f"{m} {'↑' if m in HIGHER_IS_BETTER else '↓'}"


def _aggregate_table(aggregates: list[dict], metrics: list[str]) -> str:
    if not aggregates:
        return ""
    cols = ["task", "engine", "items", "ok", "seconds", *metrics]
    head = "".join(f"<th>{html.escape(_header(c) if c in metrics else c)}</th>" for c in cols)
    body = []
    for a in aggregates:
        cells = []
        for c in cols:
            text, key = _fmt(a.get(c))
            if c in ("task", "engine"):
                cells.append(f"<td>{html.escape(text)}</td>")
            else:
                cells.append(f'<td class=num data-v="{key}">{html.escape(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h2>Per task and engine</h2><table class=sortable><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _item_table(rows: list[dict], metrics: list[str], thumbs: Thumbs) -> str:
    per_item = [m for m in metrics if m not in SET_METRICS]
    images = [c for c in IMAGE_COLUMNS if any(r["images"].get(c) is not None for r in rows)]
    head = ["id", "task", "engine", "status", *images, *(_header(m) for m in per_item), "s", "notes"]
    out = []
    for r in rows:
        cls = "" if r.get("status") in (None, "ok") else " class=error"
        cells = [f"<td>{html.escape(str(r.get(k) if r.get(k) is not None else ''))}</td>"
                 for k in ("id", "task", "engine", "status")]
        cells += ["<td>" + thumbs(r["images"].get(c), f"{r['id']}_{c}") + "</td>" for c in images]
        for m in per_item:
            text, key = _fmt(r["scores"].get(m))
            cells.append(f'<td class=num data-v="{key}">{html.escape(text)}</td>')
        text, key = _fmt(r.get("seconds"))
        cells.append(f'<td class=num data-v="{key}">{html.escape(text)}</td>')
        notes = [r["error"]] if r.get("error") else []
        notes += [f"{k}: {v}" for k, v in (r.get("skipped") or {}).items()]
        cells.append(f"<td class=skip>{html.escape('; '.join(notes))}</td>")
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    return (f"<h2>Items ({len(rows)})</h2><table class=sortable><thead><tr>{th}</tr></thead>"
            f"<tbody>{''.join(out)}</tbody></table>")


def _galleries(galleries: list[tuple[str, list[tuple[str, Any]]]], thumbs: Thumbs) -> str:
    parts = []
    for title, figures in galleries:
        figs = "".join("<figure>" + thumbs(img, f"{title}_{label}", 170) + "<figcaption>" + html.escape(label)
                       + "</figcaption></figure>" for label, img in figures)
        parts.append(f"<section class=strip><h3>{html.escape(title)}</h3><div class=gallery>{figs}</div></section>")
    return "<div>" + "".join(parts) + "</div>"


def write_report(folder: Path, rows: list[dict], aggregates: list[dict], metrics: list[str], *,
                 title: str = "diffcompose report", intro: str = "",
                 galleries: list[tuple[str, list[tuple[str, Any]]]] | None = None) -> Path:
    """Write ``folder/report.html`` (and its thumbnails); returns its path.

    ``rows``: dicts with ``id``, ``task``, ``engine``, ``status``, ``error``, ``seconds``,
    ``images`` ({column: path or array}), ``scores`` and ``skipped``. ``galleries``: titled
    strips of (caption, image) shown side by side before the tables.
    """
    folder = Path(folder)
    thumbs = Thumbs(folder)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(f"<p>{html.escape(intro)}</p>")
    if galleries:
        body.append(_galleries(galleries, thumbs))
    body.append(_aggregate_table(aggregates, metrics))
    body.append(_item_table(rows, metrics, thumbs))
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
           f"<style>{_STYLE}</style></head><body>{''.join(body)}<script>{_SCRIPT}</script></body></html>\n")
    path = folder / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(doc, encoding="utf-8", errors="backslashreplace")  # text from a shell may hold lone surrogates
    os.replace(tmp, path)
    return path
