"""Experiments in the form of the paper's tables: domain data, method rows, the table itself.

`make_domain(...)` renders a target domain from its environment file (unlabelled training images,
labelled evaluation set, labelled training set for the oracle, and the true graphs for the
content gap); `run_rows(...)` trains each configuration with `sim2sg.loop.run.run`, the rows
sharing one SDR phase and one warm-up. The report (tables, curves, figure) is
`sim2sg.experiments.report`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim2sg import atomic
from sim2sg.dataset.render_job import write_samples
from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.run import run
from sim2sg.loop.state import shares_warmup, warmup_key
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scene, scene_rng

# Table rows: name -> (method, align), in the paper's order (Table 3). Meta-Sim, GPA and SAPNet
# are Faster R-CNN baselines (GPA and SAPNet need --model frcnn).
ROWS = {
    "SDR": ("sim2sg", "none"),
    "Meta-Sim": ("metasim", "none"),
    "pseudo-label": ("pseudo-label", "none"),
    "DA (sigma_a)": ("sim2sg", "appearance"),
    "GPA": ("sim2sg", "gpa"),
    "SAPNet": ("sim2sg", "sapnet"),
    "sigma_c,label": ("sim2sg", "label"),
    "sigma_c,label + sigma_a": ("sim2sg", "label+appearance"),
    "all (Sim2SG)": ("sim2sg", "all"),
    "oracle": ("oracle", "none"),
}
# The rows that loop: identical until the GRLs switch on, so they can share that warm-up.
WARMUP_ROWS = ("sigma_c,label", "sigma_c,label + sigma_a", "all (Sim2SG)")
ROW_KEYS = {"sdr": "SDR", "metasim": "Meta-Sim", "pseudo": "pseudo-label", "da": "DA (sigma_a)", "gpa": "GPA",
            "sapnet": "SAPNet", "label": "sigma_c,label",
            "label+appearance": "sigma_c,label + sigma_a", "all": "all (Sim2SG)", "oracle": "oracle"}


@dataclass(frozen=True)
class Domain:
    """Folders of a rendered target domain."""

    root: Path
    train_images: Path  # unlabelled
    train_labelled: Path  # the same images with labels (oracle only)
    train_graphs: Path  # their true scene graphs, visible objects only (content gap only)
    eval_data: Path  # labelled evaluation set


def make_domain(env_name: str, root: Path, n_train: int, n_eval: int, width: int, height: int,
                device, seed: int = 1000, batch: int = 256) -> Domain:
    """Render target domain `env_name` (its own looks and post-processing) under `root`; skips the
    work when `root/done.json` records the same request."""
    root = Path(root)
    request = {"env": env_name, "n_train": n_train, "n_eval": n_eval, "size": [width, height], "seed": seed,
               "true_graphs": "visible objects"}
    dom = Domain(root, root / "train" / "images", root / "train", root / "train" / "graphs", root / "eval")
    marker = root / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == request:
        return dom
    env = load_env(env_name)
    options = render_options(env, width, height, seed=seed)
    textures = texture_library(root)
    for split, n, offset, out in (("train", n_train, 0, dom.train_labelled), ("eval", n_eval, 10**6, dom.eval_data)):
        graphs = [sample_scene(env, scene_rng(seed, offset + i)) for i in range(n)]
        names = [f"{i:06d}" for i in range(n)]
        samples = synthesize(graphs, names, env, options, device, np.random.default_rng([seed, offset]),
                             textures, batch=batch)
        write_samples(out, samples, ("coco", "sg"), split, {"env": env_name})
        if split == "train":
            # The content gap is measured against what the images show: objects dropped for
            # visibility (occluded, out of view) are not in the target's true graphs either.
            for g, name, smp in zip(graphs, names, samples):
                sg.write_graph(dom.train_graphs / f"{name}.json", g.subgraph([o.object_id for o in smp.objects]).copy())
    atomic.write_text(marker, json.dumps(request) + "\n")
    return dom


def row_name(row: str, tag: str = "") -> str:
    """A row's name in a table whose adapting rows carry `tag` (their settings differ from another
    table's sharing the same SDR phase): "all (Sim2SG) [tag]". SDR and the oracle never change."""
    return row if not tag or row in ("SDR", "oracle") else f"{row} [{tag}]"


def run_rows(rows: list[str], source_env: str, domain: Domain, out: Path, base: LoopConfig, log=print,
             tag: str = "", keep_complete: bool = False) -> dict:
    """Train every row (keys of ROWS) against `domain`; returns {row_name: history} (also in
    out/slug(row_name)/). keep_complete: a row whose folder already holds a finished run of the
    same configuration is not trained again; its history is returned as it is."""
    results = {}
    for row in rows:
        name = row_name(row, tag)
        cfg = row_config(row, source_env, domain, Path(out) / slug(name), base)
        done = complete_history(Path(cfg.out) / "history.json", cfg) if keep_complete else None
        if done is not None:
            log(f"== {name}: kept, {cfg.out}/history.json is a finished run of the same configuration")
            results[name] = done
            continue
        log(f"== {name}")
        results[name] = run(cfg, log=log)
    return results


def row_config(row: str, source_env: str, domain: Domain, out: Path, base: LoopConfig) -> LoopConfig:
    """The run of table row `row` (a key of ROWS) against `domain`, in folder `out`."""
    method, align = ROWS[row]
    return dataclasses.replace(base, env=source_env, target=str(domain.train_images), out=str(out), method=method,
                               align=align, eval_data=str(domain.eval_data), target_graphs=str(domain.train_graphs),
                               oracle_data=str(domain.train_labelled))


def warmup_path(rows: list[str], source_env: str, domain: Domain, out: Path, base: LoopConfig) -> str | None:
    """Where the loop rows share their warm-up (`LoopConfig.warmup_checkpoint`) when at least two of
    `rows` (ROWS keys) loop, else None (one row has nothing to share): OUT/warmup_<hash>.pt, the
    hash of everything the warm-up depends on, so that calls with other loop settings in the same
    OUT (`tables.py --tag`) each get their own."""
    if sum(r in WARMUP_ROWS for r in rows) < 2:
        return None
    key = warmup_key(row_config("sigma_c,label", source_env, domain, out, base))
    return str(Path(out) / f"warmup_{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt")


def train_warmup(source_env: str, domain: Domain, out: Path, base: LoopConfig, log=print) -> None:
    """Train the loop rows' shared warm-up - the SDR phase and the iterations before the GRLs
    switch on - once into `base.warmup_checkpoint` (folder OUT/warmup). Nothing to do when the
    file exists, no path is set, or the GRLs start at iteration 1."""
    cfg = row_config("sigma_c,label", source_env, domain, Path(out) / "warmup", base)
    if not shares_warmup(cfg) or Path(cfg.warmup_checkpoint).is_file():
        return
    log(f"== warm-up (shared by the loop rows until iteration {cfg.align_from_iteration})")
    run(cfg, log=log, warmup_only=True)


def complete_history(path: Path, cfg: LoopConfig) -> dict | None:
    """The history at `path` if it is a finished run (it has its total "seconds") of exactly `cfg`
    (whether compiled or not), else None (missing, unreadable, unfinished, or another configuration)."""
    try:
        h = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(h, dict):
        return None
    if not isinstance(h.get("config"), dict):
        return None
    # compile changes how a row computes, not what it is (as the device; histories written before
    # the option existed lack it)
    want = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(cfg), default=str)).items() if k != "compile"}
    same = {k: v for k, v in h["config"].items() if k != "compile"} == want
    return h if same and "seconds" in h else None


def train_sdr_phase(source_env: str, domain: Domain, out: Path, base: LoopConfig, log=print) -> None:
    """Train the SDR phase that every row but the oracle starts with, once, into
    `base.sdr_checkpoint` (nothing to do when the file exists or no path is set)."""
    if not base.sdr_checkpoint or Path(base.sdr_checkpoint).is_file():
        return
    cfg = dataclasses.replace(base, env=source_env, target=str(domain.train_images), out=str(Path(out) / "sdr_phase"),
                              method="sim2sg", align="none", eval_data=str(domain.eval_data),
                              target_graphs=str(domain.train_graphs))
    log("== SDR phase (shared by every row but the oracle)")
    run(cfg, log=log, sdr_only=True)


def slug(row: str) -> str:
    """Folder name of a table row: "all (Sim2SG)" -> "all__sim2sg"."""
    return "".join(c if c.isalnum() else "_" for c in row).strip("_").lower()
