"""The report of a table run: the table (per-class AP, mAP@0.5, R@K with its ceiling and
without graph constraint, the share of the SDR-to-oracle gap each row closes), tables over seeds
(mean +- std, paired differences), the content gap, metric curves and the Fig.-3-like figure."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from sim2sg import atomic


def format_table(results: dict, categories: list[str], k: int = 20, final: str = "final") -> str:
    """Markdown table like the paper's: per-class AP, mAP@0.5, R@K (graph constraint) / ceiling,
    R@K without graph constraint, gap closed (share of the SDR-to-oracle difference, per metric).
    `final`: which summary of each row's history ("final", or "final_source_bn" for the metrics
    with the training BatchNorm statistics of runs with `target_bn`)."""
    def val(row, key):
        s = results.get(row, {}).get(final, {}) if row in results else {}
        return s.get(key)

    sdr_m, ora_m = val("SDR", "mAP@0.5"), val("oracle", "mAP@0.5")
    sdr_r, ora_r = val("SDR", f"R@{k}"), val("oracle", f"R@{k}")
    head = ["method", *[f"AP {c}" for c in categories], "mAP@0.5", f"R@{k}", f"R@{k} ceiling",
            f"R@{k} no graph c.", "gap closed mAP", f"gap closed R@{k}", "minutes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, h in results.items():
        s = h.get(final, {}) or {}
        ap = s.get("AP@0.5", {}) or {}
        cells = [row, *[_f(ap.get(c)) for c in categories], _f(s.get("mAP@0.5")), _f(s.get(f"R@{k}")),
                 _f(s.get(f"R@{k} ceiling")), _f(s.get(f"ngR@{k}")),
                 _gap(s.get("mAP@0.5"), sdr_m, ora_m), _gap(s.get(f"R@{k}"), sdr_r, ora_r),
                 f"{h.get('seconds', 0) / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(runs: list[dict], categories: list[str], k: int = 20, final: str = "final") -> str:
    """Markdown: `format_table`'s columns as mean +- standard deviation (ddof 1) over `runs`, one
    results dict ({row: history}) per seed, for the rows present in every run. The gap closed is
    computed within each run (its own SDR and oracle), then averaged. Below it, the paired
    differences in mAP@0.5 and R@K against SDR, and of all (Sim2SG) against sigma_c,label, the
    comparisons the paper's ordering needs (the rows of one run share its SDR phase)."""
    rows = [r for r in runs[0] if all(r in run for run in runs)] if runs else []

    def cell(v, digits=3):  # a cell from fewer runs than the table's says how many
        return _ms(v, digits) + (f" ({len(v)} of {len(runs)})" if 0 < len(v) < len(runs) else "")

    def summary(run, row) -> dict:
        return run.get(row, {}).get(final, {}) or {}

    def vals(row, key, cls=None):
        got = ((summary(run, row).get("AP@0.5", {}) or {}).get(cls) if cls else summary(run, row).get(key)
               for run in runs)
        return [float(v) for v in got if v is not None]

    def gaps(row, key):
        out = []
        for run in runs:
            x, lo, hi = (summary(run, r).get(key) for r in (row, "SDR", "oracle"))
            if None not in (x, lo, hi) and abs(hi - lo) > 1e-9:
                out.append((x - lo) / (hi - lo) * 100)
        return out

    def diffs(row, base, key):
        pairs = ((summary(run, row).get(key), summary(run, base).get(key)) for run in runs)
        return [a - b for a, b in pairs if a is not None and b is not None]

    head = ["method", *[f"AP {c}" for c in categories], "mAP@0.5", f"R@{k}", f"R@{k} ceiling",
            "gap closed mAP (%)", f"gap closed R@{k} (%)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row, *[cell(vals(row, None, c)) for c in categories], cell(vals(row, "mAP@0.5")),
                 cell(vals(row, f"R@{k}"), 4), cell(vals(row, f"R@{k} ceiling"), 4),
                 cell(gaps(row, "mAP@0.5"), 0), cell(gaps(row, f"R@{k}"), 0), str(len(runs))]
        lines.append("| " + " | ".join(cells) + " |")
    pairs = [(r, "SDR") for r in rows if r not in ("SDR", "oracle")]
    label, sim = next((r for r in rows if r.startswith("sigma_c,label") and "+" not in r), None), \
        next((r for r in rows if r.startswith("all")), None)
    if label and sim:
        pairs.append((sim, label))
    if pairs:
        lines += ["", f"| paired difference | mAP@0.5 | R@{k} | seeds |", "|---|---|---|---|"]
        for a, b in pairs:
            d_m, d_r = diffs(a, b, "mAP@0.5"), diffs(a, b, f"R@{k}")
            lines.append(f"| {a} - {b} | {_ms(d_m, signed=True)} | {_ms(d_r, 4, signed=True)} | {len(d_m)} |")
    return "\n".join(lines)


def _ms(v: list[float], digits: int = 3, signed: bool = False) -> str:
    """"mean +- std" (std with ddof 1; a single value has none); "-" for no values."""
    if not v:
        return "-"
    m = float(np.mean(v))
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    return fmt.format(m) if len(v) == 1 else f"{fmt.format(m)} +- {float(np.std(v, ddof=1)):.{digits}f}"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _gap(x, lo, hi) -> str:
    if x is None or lo is None or hi is None or abs(hi - lo) < 1e-9:
        return "-"
    return f"{(x - lo) / (hi - lo) * 100 + 0.0:.0f}%"  # + 0.0: no "-0%"


def content_gap_table(results: dict) -> str:
    """Markdown: content-gap distances of the generated graphs over the iterations of each loop row."""
    lines = ["| method | phase | count TV | position W1 (m) | position W1, any class (m) | predicate TV |",
             "|---|---|---|---|---|---|"]
    for row, h in results.items():
        for p in h.get("phases", []):
            g = p.get("content_gap")
            if g:
                lines.append(f"| {row} | {p['name']} | {g['count_tv']:.3f} | {_f(g['position_w1'])} | "
                             f"{_f(g.get('position_w1_any'))} | {g['predicate_tv']:.3f} |")
    return "\n".join(lines)


def curves(results: dict, path: Path, k: int = 20) -> None:
    """Plot, at the end of each phase of each row's history (x: optimizer step): target mAP@0.5 and
    R@k (graph constraint, with its ceiling dotted), and the content gap of the graphs it trained
    on (count TV, ground-position W1 in metres per class and whatever the class, predicate TV;
    the SDR phase's are the SDR sampler's). Rows without iterations are drawn across the whole x
    range, so they stay visible beside the loop rows: SDR as a dashed line through its phases and
    on at its last value (its data keep the SDR sampler's content gap throughout), the oracle (one
    phase) as a horizontal line at its final value. Fixed y ranges ([0, 1]; both position W1s
    from 0 m, on one scale), so that noise does not look like a trend. Written atomically to
    `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("target mAP@0.5", "summary", "mAP@0.5"), (f"target R@{k} (graph constraint)", "summary", f"R@{k}"),
              ("content gap: count TV", "content_gap", "count_tv"),
              ("content gap: position W1 per class (m)", "content_gap", "position_w1"),
              # where objects stand whatever their class: a young detector's class mistakes raise
              # the per-class W1 only (sim2sg.eval.content)
              ("content gap: position W1, any class (m)", "content_gap", "position_w1_any"),
              ("content gap: predicate TV", "content_gap", "predicate_tv"))
    metres = ("position_w1", "position_w1_any")
    fig, grid = plt.subplots(2, 3, figsize=(13, 7.4))  # two rows: legible at a page's width
    axes = grid.ravel()[:len(panels)]
    for ax in grid.ravel()[len(panels):]:
        ax.axis("off")
    steps = [ph.get("step", 0) for h in results.values() for ph in h.get("phases", [])]
    x_end = max(steps) if steps else 1
    top_w1 = 1.0
    for i, (row, h) in enumerate(results.items()):
        phases = h.get("phases", [])
        x = [ph.get("step", j) for j, ph in enumerate(phases)]  # rows' phases differ; their steps line up
        loops = any(ph.get("name", "").startswith("iteration") for ph in phases)
        color = f"C{i}"
        for ax, (_, part, key) in zip(axes, panels):
            v = [(ph.get(part) or {}).get(key) for ph in phases]
            pts = [(a, b) for a, b in zip(x, v) if b is not None]
            if not pts:
                continue
            if key in metres:
                top_w1 = max(top_w1, *(b * 1.15 for _, b in pts))
            if loops:
                ax.plot(*zip(*pts), "o-", color=color, label=row)
            elif len(pts) == 1 and row == "oracle":
                ax.axhline(pts[0][1], color=color, ls="--", label=f"{row} (end of training)")
            else:  # SDR (and other rows without iterations): through its phases, then on to the end
                xs, ys = zip(*pts)
                ax.plot(list(xs) + [x_end], list(ys) + [ys[-1]], "s--", color=color, label=row, markevery=len(xs) - 1 or 1)
        ceil = [(ph.get("summary") or {}).get(f"R@{k} ceiling") for ph in phases]
        if loops and any(c is not None for c in ceil):
            axes[1].axhline(max(c for c in ceil if c is not None), color="grey", ls=":", lw=1)
    for ax, (title, _, key) in zip(axes, panels):
        ax.set_title(title + (" (dotted: ceiling)" if key == f"R@{k}" else ""), fontsize=9)
        ax.set_xlabel("optimizer step (end of each phase)", fontsize=7)
        ax.set_ylim(0, top_w1 if key in metres else 1.0)
        ax.set_xlim(0, x_end * 1.03)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_path_for(path)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def figure(paths_by_column: list[tuple[str, Path]], out: Path, height: int = 160) -> None:
    """A row of images with titles (like the paper's Fig. 3): SDR, iterations, target."""
    tiles = []
    for title, p in paths_by_column:
        img = cv2.imread(str(p))
        if img is None:
            continue
        img = cv2.resize(img, (int(img.shape[1] * height / img.shape[0]), height))
        band = np.full((24, img.shape[1], 3), 255, np.uint8)
        cv2.putText(band, title, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([band, img]))
    if tiles:
        ok, buf = cv2.imencode(".png", np.hstack(tiles))
        atomic.write_bytes(out, buf.tobytes())
