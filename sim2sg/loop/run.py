"""Algorithm 1 of Sim2SG (synthesis-by-analysis), its ablations and baselines: `run(LoopConfig)`.

Sim2SG (`method="sim2sg"`): start from structured domain randomization (SDR) data; then, each
iteration, predict scene graphs on the unlabelled target images, lift them to 3D (known camera,
flat ground), re-derive relations in 3D, randomize what the graphs do not fix, render on the
model's device (in memory) and train on the result (`sim2sg.loop.synthesis`). `align` picks the
paper's ablations (`sim2sg.train.align`): "none" (the SDR baseline), "appearance" (SDR + sigma_a),
"label" (the loop, sigma_c,label), "label+appearance", "all" (+ sigma_c,pred on the outputs h(z)).

GRLs stay off during a warm-up (SDR training and the first `align_from_iteration - 1` loop
iterations; for runs without the loop, the first `sdr_steps`): content is aligned first, as the
paper prescribes.

Baselines: `method="pseudo-label"` (self-training on the SDR model's confident target predictions,
mixed with SDR data), `method="oracle"` (trained on labelled target data), `method="metasim"`
(Meta-Sim: each iteration learns the SDR generator's object placements by matching the network's
features of rendered and target images, `sim2sg.loop.metasim`, then trains on SDR scenes placed
so), and the feature alignments GPA and SAPNet (`align="gpa"`, `"sapnet"`: like DA, the loop's
steps on SDR data with that alignment on). Every method gets the same number of optimizer steps.

The run writes to `out`: `history.json` (per phase: steps, seconds, metrics, content gap, mean
losses; per iteration with `target_graphs`, the lift's `placement` error against the true graph of
the image each scene came from, `sim2sg.eval.content.placement_error`), `metrics.json` (the last
phase's), `checkpoint.pt` (the model after every phase; `sim2sg eval --checkpoint`), `graphs/iterN.jsonl.gz` (each target image's predicted graph and the scene
generated from it) and `examples/` (a few training images per phase, for the report), and its
resume points (checkpoint.pt's extra entries, `resume_step.pt`; `run(cfg, resume=True)`, `sim2sg loop --resume`:
bit-exact on the CPU whether killed between phases or inside one; see `sim2sg.loop.state`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import torch

from sim2sg import atomic
from sim2sg.dataset.synthesize import synthesize, texture_library, worker_map
from sim2sg.errors import InputError
from sim2sg.eval.content import content_gap, placement_error
from sim2sg.loop.calibrate import calibrate_model, held_out_scenes
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.metasim import (
    AttributeParams,
    fit_attributes,
    image_features,
    sdr_statistics,
    transform_graph,
)
from sim2sg.loop.state import (
    load_resume,
    load_sdr_phase,
    load_warmup,
    save_phase_end,
    save_sdr_phase,
    save_warmup,
    shares_warmup,
)
from sim2sg.loop.synthesis import (
    TARGET_TEXTURES,
    camera_of,
    generate_scenes,
    json_default,
    predict_target,
    pseudo_labels,
    target_cameras,
    target_statistics,
    write_generated,
)
from sim2sg.loop.trainer import (
    PhaseResume,
    Trainer,
    evaluate_on,
    make_trainer,
    train_phase,
)
from sim2sg.render.sample import Sample
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import Environment, load_env
from sim2sg.scene.sdr import sample_scenes
from sim2sg.train import distributed
from sim2sg.train.checkpoint import FILE_NAME, save_checkpoint
from sim2sg.train.data import PRELOAD_BYTES, ImageFolder, LabelledDataset, LabelledOnly, SampleDataset
from sim2sg.train.predict import graph_from_prediction


def summarize(metrics: dict | None, ks: tuple[int, ...] = (20, 50, 100)) -> dict:
    """The table columns of a metrics dict: per-class AP, mAP@0.5, and for each K in `ks` R@K
    (graph constraint), its ceiling and R@K without graph constraint (tables pick their K: 20 for
    clevr, 50 for dining and driving)."""
    if not metrics:
        return {}
    det = metrics.get("detection") or {}
    rel = metrics.get("relations") or {}
    gc, ngc = rel.get("graph_constraint") or {}, rel.get("no_graph_constraint") or {}
    ceil = (rel.get("ceiling") or {}).get("graph_constraint") or {}
    out = {"mAP@0.5": det.get("mAP@0.5"), "AP@0.5": det.get("AP@0.5", {})}
    for k in ks:
        out |= {f"R@{k}": gc.get(f"R@{k}"), f"R@{k} ceiling": ceil.get(f"R@{k}"), f"ngR@{k}": ngc.get(f"R@{k}")}
    return out


def read_target_graphs(folder: str | None, env: Environment) -> dict[str, nx.MultiDiGraph] | None:
    """The target's true scene graphs (`--target-graphs`) by file stem, for the content gap (and,
    where a graph's stem is a target image's, the placement error); None without."""
    if not folder:
        return None
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise InputError(folder, "", "no scene-graph *.json files (--target-graphs)")
    return {p.stem: sg.read_graph(p, env.categories, env.predicates) for p in files}


@dataclass(frozen=True)
class _Run:
    """What every phase of one run reads (the trainer and history are mutable)."""

    cfg: LoopConfig
    env: Environment
    out: Path
    textures: Path
    target: ImageFolder
    true_graphs: list | None
    true_by_image: tuple | None  # per target image, its true graph (same file stem) or None
    tr: Trainer
    options: object  # RenderOptions
    camera: object  # Camera of the target images, or one per image (synthesis.target_cameras)
    bn: int  # target images for AdaBN statistics (0: off)
    history: dict
    log: object
    t_run: float
    rng: np.random.Generator  # the loop's: scene seeds and rendering
    resume: PhaseResume
    done: int  # phases finished before this call (resumed runs)
    cache: dict = field(default_factory=dict)  # rendered once per call: the lift's calibration scenes


def run(cfg: LoopConfig, log=print, sdr_only: bool = False, warmup_only: bool = False,
        resume: bool = False) -> dict:
    """Run `cfg`; returns {"config", "phases": [{name, steps, seconds, metrics, content_gap}], ...}
    and writes it to cfg.out/history.json (plus the last phase's metrics to metrics.json).
    sdr_only: stop after the SDR phase (to save it once to `cfg.sdr_checkpoint` for other runs);
    warmup_only: stop once `cfg.warmup_checkpoint` is saved (likewise). resume: continue the run
    in `cfg.out` from its resume points (`sim2sg.loop.state`; the same settings, `InputError`
    otherwise)."""
    cfg.validate()
    distributed.check_batch(cfg.batch_size)
    env = load_env(cfg.env)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    textures = texture_library(out)
    target = ImageFolder(cfg.target, size=(cfg.height, cfg.width), preload_bytes=PRELOAD_BYTES)
    named = read_target_graphs(cfg.target_graphs, env)
    true_graphs = list(named.values()) if named is not None else None
    true_by_image = tuple(named.get(Path(f).stem) for f in target.files) if named is not None else None
    tr = make_trainer(cfg, env)
    rng = np.random.default_rng([cfg.seed, 2])  # the loop's: scene seeds and rendering
    history = {"config": dataclasses.asdict(cfg), "phases": []}
    point = load_resume(tr.state, cfg, rng, history) if resume else None
    history["config"] = dataclasses.asdict(cfg)
    done = len(history["phases"])
    if resume:
        log(f"[resume] {done} phase(s) done" + (f", phase {done + 1} from step {point['checkpoint']['step']}"
                                                  if point else ""))
    r = _Run(cfg, env, out, textures, target, true_graphs, true_by_image, tr, render_options(env, cfg.width, cfg.height, seed=cfg.seed),
             target_cameras(env, cfg, target.files), cfg.target_bn_images if cfg.target_bn else 0,
             history, log, time.perf_counter(), rng, PhaseResume(tr, cfg, history, cfg.checkpoint_every, point), done)

    if cfg.method == "oracle":
        if done < 1:
            t = time.perf_counter()
            labelled = LabelledDataset(cfg.oracle_data, preload_bytes=PRELOAD_BYTES)
            train_phase(tr, labelled, None, cfg.total_steps(), "none", cfg.progress, "oracle", r.resume, log=r.log)
            _record(r, "oracle", time.perf_counter() - t)
        return _finish(r)

    # Phase 0: SDR. Warm-up: no gradient reversal unless the run never loops (SDR + sigma_a).
    t = time.perf_counter()
    sdr_samples = _sdr_data(r, cfg.sdr_scenes)
    _save_examples(out, "sdr", sdr_samples[:4])
    sdr = SampleDataset(sdr_samples, list(env.predicates))
    del sdr_samples
    # A loop row with a saved warm-up (SDR phase + the iterations before the GRLs) continues from
    # it and skips those phases (`LoopConfig.warmup_checkpoint`); a resumed run skips what it did.
    warm = shares_warmup(cfg) and not sdr_only
    if warmup_only and not warm:
        raise ValueError("warmup_only needs a loop run with warmup_checkpoint and align_from_iteration > 1")
    resumed = warm and not done and load_warmup(tr.state, cfg, rng, r.history)
    if resumed:
        _write_history(r)
        log(f"[warm-up] continuing at iteration {cfg.align_from_iteration} from {cfg.warmup_checkpoint}")
        if warmup_only:
            return r.history
    elif done < 1:
        # The SDR phase never aligns: content first (the paper's warm-up). A run that never loops
        # (SDR, DA) spends the loop's steps on SDR data, with its GRLs on from then on.
        if not load_sdr_phase(tr.state, cfg):
            train_phase(tr, sdr, target, cfg.sdr_steps, "none", cfg.progress, "sdr", r.resume, log=r.log)
            save_sdr_phase(tr.state, tr.cfg, tr.meta, cfg)
        _record(r, "sdr", time.perf_counter() - t, gap=r.history.get("sdr_content_gap"))
    if sdr_only:
        return _finish(r)
    model_align = cfg.model_align()
    if not cfg.loops and cfg.method == "sim2sg" and cfg.iterations * cfg.iter_steps > 0 and done < 2:
        t = time.perf_counter()
        train_phase(tr, sdr, target, cfg.iterations * cfg.iter_steps, model_align, cfg.progress, "sdr, continued",
                    r.resume, log=r.log)
        _record(r, "sdr (aligned)" if model_align != "none" else "sdr (continued)", time.perf_counter() - t)

    if cfg.method == "metasim":
        graphs = _sdr_graphs(r, cfg.sdr_scenes)
        for it in range(1, cfg.iterations + 1):
            if it >= done:  # phase `it` (after the SDR phase 0) not finished before a resume
                _metasim_iteration(r, it, graphs, model_align)
        return _finish(r)
    if cfg.method == "pseudo-label" and done < 2:
        t = time.perf_counter()
        pseudo = pseudo_labels(tr.state, tr.cfg.amp, target, cfg.pseudo_threshold, r.bn)
        mixed = torch.utils.data.ConcatDataset([pseudo, sdr]) if len(pseudo) else sdr
        train_phase(tr, mixed, None, cfg.iterations * cfg.iter_steps, "none", cfg.progress, "pseudo-label", r.resume,
                    log=r.log)
        _record(r, "pseudo-label", time.perf_counter() - t, {"pseudo_images": len(pseudo)})
        return _finish(r)
    if cfg.method == "pseudo-label" or not cfg.loops:
        return _finish(r)

    sdr_kept = sdr if cfg.align_sdr_scenes else LabelledOnly(sdr)  # what keep_sdr adds to each iteration
    for it in range(cfg.align_from_iteration if resumed else 1, cfg.iterations + 1):
        if it < done:  # phase `it` (after the SDR phase 0) finished before a resume
            continue
        _iteration(r, it, rng, model_align if it >= cfg.align_from_iteration else "none", sdr_kept)
        if warm and it == cfg.align_from_iteration - 1:
            save_warmup(tr.state, tr.cfg, tr.meta, cfg, rng, r.history, json_default)
            if warmup_only:
                return r.history
    return _finish(r)


def _sdr_graphs(r: _Run, n: int) -> list[nx.MultiDiGraph]:
    """The run's `n` SDR scene graphs (scene i from `scene_rng(seed, i)`)."""
    return list(sample_scenes(r.env, r.cfg.seed, n))


def _sdr_data(r: _Run, n: int) -> list[Sample]:
    """`n` SDR scenes of the run's seed, rendered (and their content gap to the target's)."""
    cfg = r.cfg
    graphs = _sdr_graphs(r, n)
    if r.true_graphs is not None:
        r.history["sdr_content_gap"] = content_gap(graphs, r.true_graphs, r.env.categories, r.env.predicates)
    return synthesize(graphs, [f"sdr_{i:06d}" for i in range(n)], r.env, r.options, r.tr.state.device,
                      np.random.default_rng([cfg.seed, 1]), r.textures, batch=cfg.render_batch,
                      keep_usd=(r.out / "usd" / "sdr") if cfg.keep_usd else None)


def _iteration(r: _Run, it: int, rng: np.random.Generator, align: str, sdr_kept) -> None:
    """Loop iteration `it`: predict on the target, lift, render the generated scenes, train."""
    cfg, env, tr, target = r.cfg, r.env, r.tr, r.target
    t = time.perf_counter()
    outs = predict_target(tr.state, tr.cfg.amp, target, bn_images=r.bn)
    # Under torchrun every rank runs the synthesis from rank 0's predictions (the ranks hold one
    # model, but GPU kernels need not agree to the bit), so all ranks train on the same scenes.
    outs = distributed.broadcast_object(outs)
    threshold, calibration = _lift_threshold(r)
    t_predict = time.perf_counter() - t
    jobs = []
    seeds = iter(rng.integers(0, 2**63 - 1, size=len(outs) * cfg.scenes_per_image).tolist())
    for k, o in enumerate(outs):
        pred = graph_from_prediction(o, env.categories, env.predicates, camera_of(r.camera, k), env.name,
                                     score_thresh=threshold, rel_thresh=None)
        image = boxes = None
        if cfg.target_textures and len(pred):
            image = (target[k][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            # The ground patch keeps clear of every detection, the uncertain ones too.
            boxes = o["boxes"][o["scores"] >= min(0.3, threshold)].numpy()
        jobs += [(k, s, pred, image, boxes, next(seeds)) for s in range(cfg.scenes_per_image)]
    made = generate_scenes(jobs, env, r.camera, dataclasses.replace(cfg, score_threshold=threshold), it, r.textures)
    t_generate = time.perf_counter() - t - t_predict
    graphs = [g for g, _, _ in made]
    looks = [look for _, look, _ in made]
    sources = [src for _, _, src in made]  # the target image index, -1 for an SDR fallback
    names = [f"it{it}_{k:06d}_{s}" for k, s, *_ in jobs]
    write_generated(r.out / "graphs" / f"iter{it}.jsonl.gz", jobs, made)
    gap = content_gap(graphs, r.true_graphs, env.categories, env.predicates) if r.true_graphs else None
    # The lift's own error: each scene lifted from a target image against that image's true graph.
    placement = placement_error([(g, r.true_by_image[k]) for g, _, k in made
                                 if k >= 0 and r.true_by_image[k] is not None]) if r.true_by_image else None
    samples = synthesize(graphs, names, env, r.options, tr.state.device, rng, r.textures, batch=cfg.render_batch,
                         keep_usd=(r.out / "usd" / f"iter{it}") if cfg.keep_usd else None, target_looks=looks)
    if not cfg.keep_usd:  # the crops served this iteration's stages only
        shutil.rmtree(r.textures / TARGET_TEXTURES / f"it{it}", ignore_errors=True)
    t_synth = time.perf_counter() - t
    generated = SampleDataset(samples, list(env.predicates))
    data = torch.utils.data.ConcatDataset([generated, sdr_kept]) if cfg.keep_sdr else generated
    means = train_phase(tr, data, target, cfg.iter_steps, align, cfg.progress, f"iteration {it}", r.resume, log=r.log)
    # The report's examples are scenes generated from target predictions (not SDR fallbacks),
    # named with the target image each came from.
    shown = [i for i, k in enumerate(sources) if k >= 0][:4] or list(range(min(4, len(samples))))
    _save_examples(r.out, it, [samples[i] for i in shown])
    _record(r, f"iteration {it}", time.perf_counter() - t,
            {"synthesis_seconds": round(t_synth, 2),
             # where it went: predicting on the target (with "auto", calibrating the lift threshold
             # too), lifting (+ crops), building and rendering
             "synthesis_split": {"predict": round(t_predict, 2), "lift": round(t_generate, 2),
                                 "render": round(t_synth - t_predict - t_generate, 2)},
             "align": align, "graphs": len(graphs),
             # mean losses over the phase's steps, GRL weight, and with --grl-bound the mean share
             # of the GRL gradient let through (grl_scale)
             "train": {k: round(v, 5) for k, v in means.items()},
             "lifted": sum(k >= 0 for k in sources), "example_targets": [sources[i] for i in shown],
             "placement": placement, "lift_threshold": threshold,
             **({"lift_calibration": dataclasses.asdict(calibration)} if calibration else {})}, gap)


def _lift_threshold(r: _Run):
    """(the synthesis step's score threshold, its `Calibration` or None): the configured number,
    or with "auto" calibrated on held-out SDR scenes for the current network (`sim2sg.loop.calibrate`),
    those scenes rendered once per call. Under torchrun rank 0's choice serves every rank."""
    cfg = r.cfg
    if cfg.score_threshold != "auto":
        return float(cfg.score_threshold), None
    if "calibration" not in r.cache:
        r.cache["calibration"] = held_out_scenes(r.env, cfg.seed, cfg.sdr_scenes, r.options, r.tr.state.device,
                                                 r.textures, batch=cfg.render_batch)
    c = calibrate_model(r.tr.state, r.tr.cfg.amp, r.cache["calibration"], r.env, cfg.min_fit_iou, cfg.seed)
    c = distributed.broadcast_object(c)
    r.log(c.describe())
    return c.threshold, c


def _metasim_iteration(r: _Run, it: int, graphs: list, align: str) -> None:
    """Meta-Sim iteration `it`: fit the attribute transform (from the last iteration's) on the
    current network's features, render the SDR graphs transformed by it, train on them."""
    cfg, env, tr = r.cfg, r.env, r.tr
    t = time.perf_counter()
    last = next((p["metasim"] for p in reversed(r.history["phases"]) if "metasim" in p), None)
    params = (AttributeParams.from_dict(last["params"], env.categories) if last
              else AttributeParams.identity(env.categories))
    stats = sdr_statistics(graphs, env.categories)
    model, dev, amp = tr.state.model, tr.state.device, tr.cfg.amp
    n = min(len(r.target), cfg.metasim_images)
    target = torch.cat([image_features(model, [r.target[i][0] for i in range(s, min(n, s + 32))], dev, amp)
                        for s in range(0, n, 32)])

    def features(gs: list, seeds: list[int]) -> torch.Tensor:
        samples = synthesize(gs, [f"metasim_{k}" for k in range(len(gs))], env, r.options, dev, r.rng, r.textures,
                             batch=cfg.render_batch, seeds=seeds, pmap=pmap)
        ds = SampleDataset(samples, list(env.predicates))
        return image_features(model, [ds[k][0] for k in range(len(ds))], dev, amp)

    # One pool of scene builders for the whole fit (starting one per evaluation cost ~1 s of
    # each ~2 s step on the H100), sized for one step's 2 x batch scenes.
    with worker_map(2 * min(cfg.metasim_batch, len(graphs))) as pmap:
        fit = fit_attributes(params, graphs, stats, env, target, features, r.rng, cfg.metasim_steps,
                             cfg.metasim_batch, cfg.metasim_lr, cfg.metasim_delta)
    t_fit = time.perf_counter() - t
    made = [transform_graph(g, fit.params, stats, env) for g in graphs]
    gap = content_gap(made, r.true_graphs, env.categories, env.predicates) if r.true_graphs else None
    samples = synthesize(made, [f"metasim{it}_{i:06d}" for i in range(len(made))], env, r.options, dev, r.rng,
                         r.textures, batch=cfg.render_batch,
                         keep_usd=(r.out / "usd" / f"iter{it}") if cfg.keep_usd else None)
    means = train_phase(tr, SampleDataset(samples, list(env.predicates)), r.target, cfg.iter_steps, align,
                        cfg.progress, f"meta-sim {it}", r.resume, log=r.log)
    _save_examples(r.out, it, samples[:4])
    _record(r, f"iteration {it}", time.perf_counter() - t,
            {"metasim": {"params": fit.params.to_dict(), "mmd_first": fit.mmd[0] if fit.mmd else None,
                         "mmd_last": fit.mmd[-1] if fit.mmd else None, "fit_seconds": round(t_fit, 2)},
             "align": align, "graphs": len(made), "train": {k: round(v, 5) for k, v in means.items()}}, gap)


def _record(r: _Run, name: str, seconds: float, extra: dict | None = None, gap: dict | None = None) -> None:
    """Evaluate, save the model and log one finished phase into the history."""
    tr, cfg = r.tr, r.cfg
    # One re-estimation of the target statistics serves the evaluation and the saved model
    # (the statistics come from the unlabelled target images, never from the evaluation set).
    with target_statistics(tr.state, tr.cfg.amp, r.target, r.bn):
        m = evaluate_on(tr, cfg.eval_data, r.env)
        if r.bn:  # else the resume point below is the checkpoint
            save_checkpoint(r.out / FILE_NAME, tr.state, tr.cfg, tr.meta | {"target_batchnorm": True})
    phase = {"name": name, "step": tr.state.step, "seconds": round(seconds, 2), "metrics": m,
             "summary": summarize(m), "content_gap": gap, **(extra or {})}
    if r.bn and cfg.eval_data:
        phase["summary_source_bn"] = summarize(evaluate_on(tr, cfg.eval_data, r.env))
    r.history["phases"].append(phase)
    save_phase_end(tr.state, tr.cfg, tr.meta | {"target_batchnorm": False}, cfg, r.rng, r.history, json_default)
    s = phase["summary"]
    msg = f"[{name}] step {tr.state.step} ({seconds:.0f} s)"
    if s:
        msg += (f"  mAP@0.5 {_fmt(s['mAP@0.5'])}  R@20 {_fmt(s['R@20'])} / ceiling {_fmt(s['R@20 ceiling'])}"
                f"  R@50 {_fmt(s['R@50'])} / {_fmt(s['R@50 ceiling'])}")
    if gap:
        msg += (f"  content gap: count TV {gap['count_tv']:.3f}, position W1 {_fmt(gap['position_w1'])} m"
                f" (any class {_fmt(gap.get('position_w1_any'))} m)")
    if phase.get("placement") and phase["placement"]["matched"]:
        p = phase["placement"]
        msg += (f"  placement: {p['matched']} of {p['lifted']} lifted objects match a true one, "
                f"median {p['median_m']:.3f} m")
    if "lifted" in phase:
        msg += f"  scenes from predictions {phase['lifted']} / {phase['graphs']} (the rest SDR: nothing detected or liftable)"
    r.log(msg)
    _write_history(r)


def _write_history(r: _Run) -> None:
    if not distributed.is_main():
        return
    atomic.write_text(r.out / "history.json", json.dumps(r.history, indent=1, default=json_default) + "\n")


def _save_examples(out: Path, it, samples: list[Sample]) -> None:
    """A few rendered training images of a phase, for the report's figure."""
    import cv2

    for k, s in enumerate(samples):
        ok, buf = cv2.imencode(".png", cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR))
        stem = it if isinstance(it, str) else f"iter{it}"
        atomic.write_bytes(out / "examples" / f"{stem}_{k}.png", buf.tobytes())


def _finish(r: _Run) -> dict:
    history = r.history
    history["seconds"] = round(time.perf_counter() - r.t_run, 2)
    last = history["phases"][-1] if history["phases"] else {}
    history["final"] = last.get("summary", {})
    if "summary_source_bn" in last:
        history["final_source_bn"] = last["summary_source_bn"]
    _write_history(r)
    if last.get("metrics") is not None and distributed.is_main():
        atomic.write_text(r.out / "metrics.json", json.dumps(last["metrics"], indent=1, default=json_default) + "\n")
    return history


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"
