"""The report folder of a table run, as a user opens it: `index.html` (one self-contained page:
the table, the curves and the Fig.-3-like figure embedded as base64 PNGs, no network), beside
`table.md`, `results.json`, `curves.png` and `figure.png`.

The figure pairs every generated scene with the target image it was generated from (the loop's
`examples/iterN_k.png` and the phase's `example_targets`), upscaled with nearest-neighbour
interpolation so that small renders stay legible.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import cv2
import numpy as np

from sim2sg import atomic
from sim2sg.experiments.report import content_gap_table, curves, format_table
from sim2sg.experiments.tables import Domain, slug
from sim2sg.scene.environment import load_env
from sim2sg.train.data import list_images

TILE = 192  # px: the figure's image side (upscaled with nearest-neighbour from the render size)


def write_report(report: Path, results: dict, domain: Domain, runs: Path, description: str, env: str = "clevr",
                 k: int = 20, log=print) -> Path:
    """Write the report of `results` ({row: history}, rows trained under `runs`/slug(row)) to the
    folder `report`; returns it. description: one paragraph of what was run (the preset). An
    earlier report there is deleted first (`clear_report`) and index.html is written last, so a
    kill midway leaves no page of an earlier run beside new files."""
    report = Path(report)
    clear_report(report)
    cats = list(load_env(env).categories)
    table = format_table(results, cats, k)
    source_bn = None
    if any("final_source_bn" in h for h in results.values()):
        source_bn = format_table(results, cats, k, final="final_source_bn")
    gap = content_gap_table(results)
    said = verdict(results, k)
    md = [f"# sim2sg demo: {env} -> {domain.root.name}", "", description, "", said, "", table, "",
          "gap closed: (row - SDR) / (oracle - SDR), per metric.", ""]
    if source_bn:
        md += ["The same rows, predicting on the target with the training BatchNorm statistics "
               "(SDR then uses no target information at all):", "", source_bn, ""]
    md += ["Content gap (graphs trained on vs the target's true graphs; the SDR phase's are the SDR sampler's):",
           "", gap, ""]
    atomic.write_text(report / "table.md", "\n".join(md))
    atomic.write_text(report / "results.json", json.dumps(results, default=str) + "\n")
    curves(results, report / "curves.png", k=k)
    sim = next((r for r in results if r.startswith("all")), None) or next(
        (r for r in results if any(p["name"].startswith("iteration") for p in results[r].get("phases", []))), None)
    figure_ok = False
    if sim is not None:
        figure_ok = fig3(results[sim], Path(runs) / slug(sim) / "examples", list_images(domain.train_images),
                         report / "figure.png", sim)
    page = _html(env, domain.root.name, description, said, table, source_bn, gap, report / "curves.png",
                 report / "figure.png" if figure_ok else None, sim)
    atomic.write_text(report / "index.html", page)
    return report


REPORT_FILES = ("index.html", "table.md", "results.json", "curves.png", "figure.png")  # the page first


def clear_report(report: Path) -> None:
    """Delete the files `write_report` writes from the folder `report` (index.html first), nothing else."""
    for name in REPORT_FILES:
        (Path(report) / name).unlink(missing_ok=True)


def verdict(results: dict, k: int = 20) -> str:
    """One sentence on what the table shows: Sim2SG (the "all" row) against SDR in mAP@0.5 and
    R@k, and the share of the SDR-to-oracle mAP gap it closed; "" without both rows."""
    sim = next((r for r in results if r.startswith("all")), None)
    if sim is None or "SDR" not in results:
        return ""
    f = {r: results[r].get("final") or {} for r in results}
    m, r = (f[sim].get(key) for key in ("mAP@0.5", f"R@{k}")), (f["SDR"].get(key) for key in ("mAP@0.5", f"R@{k}"))
    (m_sim, r_sim), (m_sdr, r_sdr) = m, r
    if None in (m_sim, m_sdr):
        return ""
    out = (f"{sim} {'beats' if m_sim > m_sdr else 'does not beat'} SDR in mAP@0.5 "
           f"({m_sim:.3f} vs {m_sdr:.3f}, {m_sim - m_sdr:+.3f})")
    if r_sim is not None and r_sdr is not None:
        out += f" and has {'a higher' if r_sim > r_sdr else 'no higher'} R@{k} ({r_sim:.4f} vs {r_sdr:.4f})"
    ora = f.get("oracle", {}).get("mAP@0.5")
    if ora is not None and ora > m_sdr + 1e-9:
        out += f"; it closes {(m_sim - m_sdr) / (ora - m_sdr) * 100 + 0.0:.0f}% of the SDR-to-oracle mAP gap (oracle {ora:.3f})"
        if m_sim > ora:  # then the oracle is no ceiling: it has not learned all its labels can teach
            out += ", i.e. it is above the oracle, which at this budget is no upper bound"
    elif ora is not None:  # then the "gap closed" columns mean nothing
        out += (f"; the oracle ({ora:.3f}) is not above SDR: at this budget the network has not learned the task "
                "even from the target's own labels, so there is no gap to close")
    gap = gap_trend(results[sim])
    return out + (f". Its content gap: {gap}" if gap else "") + \
        " (one seed: benchmarks/demo_seeds.py measures the spread over seeds)."


GAP_MEASURES = (("count_tv", "count TV", ""), ("position_w1", "position W1 per class", " m"),
                ("position_w1_any", "position W1 of any class", " m"))


def gap_trend(history: dict) -> str:
    """How the content gap of a loop row's history moved from its SDR phase (the SDR sampler's
    graphs) to its last iteration, per measure: the two values and whether it fell at every
    iteration, fell overall only, or rose; "" without two measured phases."""
    phases = [ph["content_gap"] for ph in history.get("phases", []) if ph.get("content_gap")]
    said = []
    for key, name, unit in GAP_MEASURES:
        v = [g.get(key) for g in phases]
        if len(v) < 2 or None in v:
            continue
        falls = all(b < a for a, b in zip(v, v[1:]))
        how = "fell at every iteration" if falls else "fell, not at every iteration" if v[-1] < v[0] else "rose"
        said.append(f"{name} {v[0]:.3f} -> {v[-1]:.3f}{unit} ({how})")
    return "; ".join(said)


def fig3(history: dict, examples: Path, target_images: list[Path], out: Path, row: str, per_row: int = 3) -> bool:
    """Fig. 3 in form, written to `out` (PNG): a row of SDR training samples, then one row per
    iteration with up to `per_row` pairs (target image | the scene generated from it). False when
    there is nothing to show."""
    bands = []
    sdr = [_read(f) for f in sorted(examples.glob("sdr_*.png"))]
    sdr = [im for im in sdr if im is not None]
    if sdr:
        bands.append(_band("SDR (structured domain randomization): training samples", [(im, "") for im in sdr]))
    for ph in history.get("phases", []):
        name = ph.get("name", "")
        if not name.startswith("iteration"):
            continue
        it = int(name.split()[-1])
        tiles = []
        for i, k in enumerate((ph.get("example_targets") or [])[:per_row]):
            gen = _read(examples / f"iter{it}_{i}.png")
            tgt = _read(target_images[k]) if 0 <= k < len(target_images) else None
            if gen is None:
                continue
            tiles += [(tgt if tgt is not None else np.zeros_like(gen), f"target #{k}"),
                      (gen, f"generated from #{k}" if k >= 0 else "SDR fallback")]
        if tiles:
            gap = ph.get("content_gap") or {}
            extra = f", count TV {gap['count_tv']:.2f}" if gap else ""
            bands.append(_band(f"{row}, {name}: target image | scene generated from its prediction "
                               f"({ph.get('lifted', '?')} of {ph.get('graphs', '?')} scenes from predictions{extra})",
                               tiles))
    if not bands:
        return False
    width = max(b.shape[1] for b in bands)
    img = np.vstack([np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in bands])
    ok, buf = cv2.imencode(".png", img)
    atomic.write_bytes(out, buf.tobytes())
    return True


def _read(path: Path):
    if not Path(path).is_file():
        return None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    s = TILE / max(img.shape[:2])
    return cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_NEAREST)


def _band(title: str, tiles: list[tuple[np.ndarray, str]], pad: int = 6) -> np.ndarray:
    """A titled row of tiles, each with its caption above it; pairs (even, odd) sit closer."""
    cells = []
    for i, (im, cap) in enumerate(tiles):
        head = np.full((20, im.shape[1], 3), 255, np.uint8)
        cv2.putText(head, cap, (2, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
        cell = np.vstack([head, im])
        gap = pad if i % 2 == 0 else 4 * pad  # wider space after each pair
        cells += [cell, np.full((cell.shape[0], gap, 3), 255, np.uint8)]
    h = max(c.shape[0] for c in cells)
    row = np.hstack([np.pad(c, ((0, h - c.shape[0]), (0, 0), (0, 0)), constant_values=255) for c in cells])
    title_img = np.full((26, max(row.shape[1], 8 * len(title)), 3), 255, np.uint8)
    cv2.putText(title_img, title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    row = np.pad(row, ((0, 8), (0, title_img.shape[1] - row.shape[1]), (0, 0)), constant_values=255)
    return np.vstack([title_img, row])


def md_table_html(md: str) -> str:
    """A markdown pipe table (format_table's, content_gap_table's) as an HTML table."""
    rows = [line.strip().strip("|").split("|") for line in md.splitlines() if line.strip().startswith("|")]
    rows = [r for r in rows if not all(set(c.strip()) <= set("-:") for c in r)]
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_STYLE = """body{font-family:sans-serif;max-width:1400px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;image-rendering:pixelated}
p.note{color:#555;font-size:90%}"""


def _html(env: str, target: str, description: str, said: str, table: str, source_bn: str | None, gap: str, curves_png: Path,
          figure_png: Path | None, sim: str | None) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>sim2sg demo: {env} -> {target}</title>",
             f"<style>{_STYLE}</style></head><body>", f"<h1>Sim2SG: {env} &rarr; {html.escape(target)}</h1>",
             f"<p>{html.escape(description)}</p>", f"<p><b>{html.escape(said)}</b></p>", "<h2>Results on the labelled target evaluation set</h2>",
             md_table_html(table),
             "<p class='note'>mAP@0.5: COCO AP50. R@20: triplet recall at 20 with graph constraint, beside its "
             "ceiling (the recall a perfect predictor reaches with this evaluator). Gap closed: (row - SDR) / "
             "(oracle - SDR). The oracle trains on the labels of the target images.</p>"]
    if source_bn:
        parts += ["<h3>The same rows with the training BatchNorm statistics</h3>", md_table_html(source_bn)]
    parts += ["<h2>Curves</h2>", _img(curves_png, "metrics and content gap over the iterations"),
              "<h2>Content gap per phase</h2>", md_table_html(gap)]
    if figure_png is not None:
        parts += [f"<h2>Generated scenes (Fig. 3 in form, row {html.escape(sim or '')})</h2>",
                  _img(figure_png, "SDR samples; per iteration, target images and the scenes generated from them")]
    parts.append("</body></html>\n")
    return "\n".join(parts)


__all__ = ["REPORT_FILES", "clear_report", "fig3", "gap_trend", "md_table_html", "verdict", "write_report"]
