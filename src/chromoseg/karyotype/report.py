"""A report a person opens: one self-contained HTML page and a CSV, a row per metaphase.

:func:`write_report` takes a list of per-metaphase results (dicts)::

    {"image": "A06__XY/A060101XYD.tif",          # path or name, shown as the row's title
     "overlay": PNG path or RGB array or None,    # masks + rotated boxes + labels
     "karyogram": PNG path or RGB array or None,
     "counts": KaryotypeCounts (or its .as_row() dict),
     "summary": "45,XY,-8",                       # optional, default counts.summary
     "flags": [...], "findings": [...],            # optional, default from counts
     "truth": "45,XY,-8"}                          # optional: the known karyotype, shown beside ours

The page has no external reference at all: images are embedded as base64 PNG (downscaled so their
longer side is at most ``max_image_side`` px), the CSS is inline, there is no script. Rows are sorted
with failed images first, then flagged metaphases (most flags first), then those with findings (a karyotype other than
46,XX / 46,XY), then the rest, each group by image name. The CSV has the same rows in the same order.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import functools
import html
import io
from pathlib import Path

import numpy as np

from chromoseg.karyotype.iscn import id_to_chrom

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:18px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .meta{color:#666;font-size:13px;margin-bottom:12px}
table.rows{border-collapse:collapse;width:100%;background:#fff}
table.rows>tbody>tr>td,table.rows>thead>tr>th{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
table.rows>thead>tr>th{background:#eee;font-size:13px}
tr.flagged>td:first-child{border-left:6px solid #e67e00} tr.finding>td:first-child{border-left:6px solid #3b6fd1}
tr.ok>td:first-child{border-left:6px solid #3a9d4a}
.name{font-weight:600;font-size:13px;word-break:break-all}
.iscn{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;font-weight:600}
.truth{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;color:#555}
.match{color:#2a7d39}.mismatch{color:#c0392b}
ul.flags{margin:4px 0 0 0;padding-left:16px;font-size:12px;color:#b35900}
ul.findings{margin:4px 0 0 0;padding-left:16px;font-size:12px;color:#2c55a8}
img{display:block;max-width:100%;height:auto;border:1px solid #ccc;background:#fff}
td.img{width:30%} td.kimg{width:44%}
table.counts{border-collapse:collapse;margin-top:6px;font-size:11px}
table.counts td{border:1px solid #ddd;padding:1px 3px;text-align:center;min-width:14px}
table.counts td.c{color:#777} td.lo{background:#f8d0cc} td.hi{background:#cfe0f8}
.legend{font-size:12px;color:#555;margin:6px 0 12px} .legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px}
"""


def _png_data_uri(img, max_side: int) -> str | None:
    """data: URI of a PNG from a path or an array (downscaled to ``max_side``)."""
    if img is None:
        return None
    if isinstance(img, (str, Path)):
        p = Path(img)
        if not p.is_file():
            return None
        st = p.stat()
        return _file_data_uri(str(p), st.st_mtime_ns, st.st_size, max_side)
    return _array_data_uri(np.asarray(img), max_side)


@functools.lru_cache(maxsize=1024)
def _file_data_uri(path: str, mtime_ns: int, size: int, max_side: int) -> str:
    """data: URI of a PNG file, remembered while the file is unchanged (``predict`` renders the
    report again after every image; each earlier image is encoded once)."""
    from PIL import Image

    p = Path(path)
    with Image.open(p) as im:
        if im.format == "PNG" and max(im.size) <= max_side:  # embed the file as it is
            return "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode("ascii")
        im.load()
        pil = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
    return _pil_data_uri(pil, max_side)


def _array_data_uri(arr: np.ndarray, max_side: int) -> str:
    from PIL import Image

    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return _pil_data_uri(Image.fromarray(arr), max_side)


def _pil_data_uri(pil, max_side: int) -> str:
    from PIL import Image

    if max(pil.size) > max_side:
        f = max_side / max(pil.size)
        pil = pil.resize((max(1, int(pil.size[0] * f)), max(1, int(pil.size[1] * f))), Image.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _row_fields(r: dict) -> dict:
    c = r.get("counts")
    row = c.as_row() if hasattr(c, "as_row") else dict(c or {})
    flags = r.get("flags")
    if flags is None:
        flags = list(getattr(c, "flags", [])) if hasattr(c, "flags") else [f for f in str(row.get("flags", "")).split("; ") if f]
    findings = r.get("findings")
    if findings is None:
        findings = list(getattr(c, "findings", [])) if hasattr(c, "findings") else [f for f in str(row.get("findings", "")).split("; ") if f]
    summary = r.get("summary") or row.get("summary", "")
    expected = getattr(c, "expected", None)
    return {"row": row, "flags": list(flags), "findings": list(findings), "summary": summary,
            "expected": expected, "error": r.get("error")}


def sort_results(results: list[dict]) -> list[dict]:
    """Failed images first, then flagged (most flags first), then with findings, then the rest;
    by image name within each group."""
    def key(r):
        f = _row_fields(r)
        group = 0 if f["error"] else 1 if f["flags"] else (2 if f["findings"] else 3)
        return (group, -len(f["flags"]), str(r.get("image", "")))
    return sorted(results, key=key)


def _counts_table(row: dict, expected: dict | None) -> str:
    cells_h, cells_v = [], []
    for c in range(1, 25):
        name = id_to_chrom(c)
        v = row.get(f"n_{name}")
        if v is None:
            return ""
        exp = (expected or {}).get(c, 2 if c <= 22 else None)
        cls = ""
        if exp is not None and v < exp:
            cls = " class='lo'"
        elif exp is not None and v > exp:
            cls = " class='hi'"
        cells_h.append(f"<td class='c'>{name}</td>")
        cells_v.append(f"<td{cls}>{int(v)}</td>")
    return ("<table class='counts'><tr>" + "".join(cells_h[:12]) + "</tr><tr>" + "".join(cells_v[:12])
            + "</tr><tr>" + "".join(cells_h[12:]) + "</tr><tr>" + "".join(cells_v[12:]) + "</tr></table>")


def render_html(results: list[dict], *, title: str = "chromoseg karyotype report", note: str = "",
                max_image_side: int = 1000) -> str:
    """The report page as a string (see module docstring)."""
    rows = sort_results(results)
    n_flag = sum(1 for r in rows if _row_fields(r)["flags"] or r.get("error"))
    esc = html.escape
    out = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<div class='meta'>{len(rows)} metaphases, {n_flag} flagged (shown first) &middot; written "
        f"{esc(_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}"
        + (f" &middot; {esc(note)}" if note else "") + "</div>",
        "<div class='legend'>row colour:<span style='background:#e67e00'></span>flagged (weak evidence) or failed"
        "<span style='background:#3b6fd1'></span>not 46,XX/46,XY<span style='background:#3a9d4a'></span>normal"
        " &middot; counts: <span style='background:#f8d0cc'></span>fewer than expected"
        "<span style='background:#cfe0f8'></span>more than expected"
        " &middot; karyograms: 'straightened n of m' (in a karyogram's legend) = n chromosomes resampled along"
        " their medial axis, the others shown as cut (no clear axis)</div>",
        "<table class='rows'><thead><tr><th>metaphase</th><th>overlay</th><th>karyogram</th></tr></thead><tbody>",
    ]
    for r in rows:
        f = _row_fields(r)
        cls = "flagged" if (f["flags"] or f["error"]) else ("finding" if f["findings"] else "ok")
        info = [f"<div class='name'>{esc(str(r.get('image', '')))}</div>"]
        if f["summary"]:
            info.append(f"<div class='iscn'>{esc(f['summary'])}</div>")
        if r.get("truth"):
            t = str(r["truth"])
            same = r.get("truth_summary") is not None and r.get("truth_summary") == f["summary"]
            mark = "" if r.get("truth_summary") is None else (
                " <span class='match'>&#10003;</span>" if same else " <span class='mismatch'>&#10007;</span>")
            info.append(f"<div class='truth'>truth: {esc(t)}{mark}</div>")
        if r.get("read"):  # how the image was read: channel, pixel size, scale rule
            info.append(f"<div class='truth'>read: {esc(str(r['read']))}</div>")
        if f["error"]:
            info.append(f"<ul class='flags'><li>error: {esc(str(f['error']))}</li></ul>")
        if f["flags"]:
            info.append("<ul class='flags'>" + "".join(f"<li>{esc(x)}</li>" for x in f["flags"]) + "</ul>")
        if f["findings"]:
            info.append("<ul class='findings'>" + "".join(f"<li>{esc(x)}</li>" for x in f["findings"]) + "</ul>")
        info.append(_counts_table(f["row"], f["expected"]))
        cells = [f"<td>{''.join(info)}</td>"]
        for key, tdc in (("overlay", "img"), ("karyogram", "kimg")):
            uri = _png_data_uri(r.get(key), max_image_side)
            cells.append(f"<td class='{tdc}'><img alt='{key}' src='{uri}'></td>" if uri else f"<td class='{tdc}'>&mdash;</td>")
        out.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


#: the CSV's columns: ``n_not_chromosome`` counts the detections the not-a-chromosome rule left out
#: (in no other count; ``total`` is without them)
CSV_FIELDS = ["image", "summary", "truth", "total", "sex", "unassigned", "n_weak", "n_not_chromosome", "flags",
              "findings"] + [
    f"n_{id_to_chrom(c)}" for c in range(1, 25)] + ["overlay", "karyogram", "error"] + [
    "channel", "pixel_size_um", "pixel_size_source", "scale_rule"]  # how the image was read (empty: unknown)


def write_csv(results: list[dict], path) -> Path:
    """The report's rows as CSV (same order as the HTML page)."""
    from chromoseg.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in sort_results(results):
            f = _row_fields(r)
            row = dict(f["row"])
            row.update(image=str(r.get("image", "")), summary=f["summary"], truth=r.get("truth", ""),
                       flags="; ".join(f["flags"]), findings="; ".join(f["findings"]), error=r.get("error") or "")
            for key in ("overlay", "karyogram"):
                v = r.get(key)
                row[key] = str(v) if isinstance(v, (str, Path)) else ""
            for key in ("channel", "pixel_size_um", "pixel_size_source", "scale_rule"):
                row[key] = "" if r.get(key) is None else r[key]
            w.writerow(row)
    return path


def write_report(results: list[dict], html_path, csv_path=None, *, title: str = "chromoseg karyotype report",
                 note: str = "", max_image_side: int = 1000) -> tuple[Path, Path]:
    """Write the HTML page and the CSV (default: beside the page, same stem), each atomically.
    Returns both paths."""
    from chromoseg.atomic import write_text

    html_path = Path(html_path)
    write_text(html_path, render_html(results, title=title, note=note, max_image_side=max_image_side))
    csv_path = Path(csv_path) if csv_path else html_path.with_suffix(".csv")
    write_csv(results, csv_path)
    return html_path, csv_path
