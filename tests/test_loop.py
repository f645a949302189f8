"""The Sim2SG loop end to end on a tiny CPU configuration, and its pieces."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2sg.dataset.synthesize import synthesize, texture_library
from sim2sg.loop.config import LoopConfig
from sim2sg.loop.run import run
from sim2sg.loop.synthesis import target_camera
from sim2sg.render.settings import render_options
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import load_env
from sim2sg.scene.sdr import sample_scenes
from sim2sg.train.data import SampleDataset


@pytest.fixture(scope="module")
def target(render_target):
    """A few clevr-target images (unlabelled) and their true visible graphs, rendered in memory."""
    return render_target(4, 64)


def test_synthesized_samples_carry_exact_labels(target):
    _, samples = target
    s = samples[0]
    assert s.image.shape == (64, 64, 3) and s.instance.shape == (64, 64)
    for o in s.objects:
        ys, xs = np.nonzero(s.instance == o.instance_id)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(int(v) for v in o.box)
    ds = SampleDataset(samples, ["front", "behind", "left", "right"])
    img, t = ds[0]
    assert img.shape == (3, 64, 64) and img.max() <= 1.0
    assert t["boxes"].shape[0] == t["labels"].shape[0] and t["relations"].shape[1] == 3


def test_target_camera_is_the_nominal_camera():
    cam = target_camera(load_env("clevr"), 128, 128)
    assert cam.position == pytest.approx((7.359, -6.926, 4.958)) and cam.width == 128


def test_loop_runs_and_records_content_gap(target, tmp_path):
    torch.set_num_threads(1)
    root, _ = target
    cfg = LoopConfig(env="clevr", target=str(root / "images"), out=str(tmp_path / "run"), align="all",
                     iterations=1, sdr_scenes=4, width=64, height=64, sdr_steps=2, iter_steps=2, batch_size=2,
                     lr_warmup_steps=1, align_from_iteration=1, target_graphs=str(root / "graphs"),
                     progress=False, keep_usd=True, grl_bound=0.5)
    lines = []
    h = run(cfg, log=lines.append)
    assert [p["name"] for p in h["phases"]] == ["sdr", "iteration 1"]
    # no progress bar: a line at each quarter of a phase (here the one step between start and end)
    import re

    assert [m.split(" (")[0] for m in lines if re.fullmatch(r"\[.+\] step \d+ of \d+ \(\d+ s\)", m)] == \
        ["[sdr] step 1 of 2", "[iteration 1] step 3 of 4"]
    assert h["phases"][1]["align"] == "both" and h["phases"][1]["content_gap"]["count_tv"] >= 0
    train = h["phases"][1]["train"]  # the phase's mean losses; the bounded path ran
    assert train["loss_domain_image"] > 0 and train["grl_lambda"] > 0 and 0 < train["grl_scale"] <= 1
    saved = json.loads((tmp_path / "run" / "history.json").read_text())
    assert saved["phases"][1]["step"] == 4
    assert len(list((tmp_path / "run" / "usd" / "iter1").glob("*.usdc"))) == 4
    import gzip

    lines = gzip.decompress((tmp_path / "run" / "graphs" / "iter1.jsonl.gz").read_bytes()).decode().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["target"] for r in rows] == [0, 1, 2, 3]  # one generated scene per target image
    for r in rows:
        g = sg.from_dict(r["generated"], "graphs")
        assert len(g) == len(r["generated"]["objects"]) and (len(g) > 0 or not r["lifted"])
        assert all(o["score"] >= cfg.score_threshold for o in r["predicted"]["objects"])
    # The placement error pairs each lifted scene with its own target image's true graph.
    place = saved["phases"][1]["placement"]
    assert place["lifted"] == sum(len(r["generated"]["objects"]) for r in rows if r["lifted"])
    assert place["true"] == sum(len(s.objects) for r, s in zip(rows, target[1]) if r["lifted"])
    assert place["matched"] <= min(place["lifted"], place["true"])


def test_bad_config_is_one_clear_error(tmp_path):
    from sim2sg.errors import InputError

    with pytest.raises(InputError, match="align"):
        run(LoopConfig(env="clevr", target=str(tmp_path), out=str(tmp_path / "o"), align="everything"))


@pytest.mark.parametrize("field, value, source", [
    ("backbone", "resnet7", "--backbone"), ("arch", "yolo", "--model"), ("batch_size", 0, "--batch"),
    ("lr", 0.0, "--lr"), ("grl_bound", -1.0, "--grl-bound"), ("grl_ramp", "cosine", "loop config"),
    ("model", {"rpn_post_nms_test": "many"}, "--set"), ("model", {"no_such": 1}, "--set"),
])
def test_loop_config_checks_the_training_fields(tmp_path, field, value, source):
    """The loop checks the fields it shares with `TrainConfig` by the same rules (`check_shared`),
    naming the option a user types."""
    from sim2sg.errors import InputError

    cfg = LoopConfig(env="clevr", target=str(tmp_path), out=str(tmp_path / "o"), **{field: value})
    with pytest.raises(InputError) as e:
        cfg.validate()
    assert e.value.source == source and e.value.field.split(".")[0] == field


@pytest.fixture
def counted(monkeypatch):
    """([trainers made], [steps of each training phase]) of the loop runs in a test."""
    import sim2sg.loop.run as loop

    trainers, phases = [], []
    make = loop.make_trainer
    monkeypatch.setattr(loop, "make_trainer", lambda *a: trainers.append(make(*a)) or trainers[-1])
    phase = loop.train_phase
    monkeypatch.setattr(loop, "train_phase",
                        lambda tr, src, tgt, steps, *a, **kw: phases.append(steps) or phase(tr, src, tgt, steps, *a, **kw))
    return trainers, phases


def test_rows_fork_from_one_shared_sdr_phase(target, tmp_path, counted):
    """A run that loads the saved SDR phase ends exactly where an unbroken run ends; a checkpoint
    saved with other settings is refused."""
    import dataclasses

    from sim2sg.errors import InputError

    torch.set_num_threads(1)
    root, _ = target
    trainers, phases = counted
    base = LoopConfig(env="clevr", target=str(root / "images"), out="", align="none", iterations=1, sdr_scenes=4,
                      width=64, height=64, sdr_steps=2, iter_steps=2, batch_size=2, lr_warmup_steps=1,
                      progress=False, sdr_checkpoint=str(tmp_path / "sdr.pt"))
    run(dataclasses.replace(base, out=str(tmp_path / "a"), sdr_checkpoint=None), log=lambda m: None)
    run(dataclasses.replace(base, out=str(tmp_path / "b")), log=lambda m: None)  # trains and saves
    assert (tmp_path / "sdr.pt").is_file() and phases == [2, 2, 2, 2]
    run(dataclasses.replace(base, out=str(tmp_path / "c")), log=lambda m: None)  # loads
    assert phases == [2, 2, 2, 2, 2]
    a, c = trainers[0].state.model.state_dict(), trainers[2].state.model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(InputError, match="other settings"):
        run(dataclasses.replace(base, out=str(tmp_path / "d"), lr=5e-3), log=lambda m: None)


def test_loop_rows_fork_from_one_shared_warmup(target, tmp_path, counted):
    """A loop row that continues from the saved warm-up (the iterations before the GRLs) ends
    exactly where an unbroken run ends, with its history, examples and generated graphs; other GRL
    settings share it, other loop settings are refused."""
    import dataclasses

    from sim2sg.errors import InputError

    torch.set_num_threads(1)
    root, _ = target
    trainers, phases = counted
    warm = tmp_path / "warm.pt"
    base = LoopConfig(env="clevr", target=str(root / "images"), out="", align="all", iterations=2, sdr_scenes=4,
                      width=64, height=64, sdr_steps=2, iter_steps=3, batch_size=2, lr_warmup_steps=1,
                      align_from_iteration=2, target_graphs=str(root / "graphs"), progress=False,
                      warmup_checkpoint=str(warm))
    quiet = lambda m: None
    a = run(dataclasses.replace(base, out=str(tmp_path / "a"), warmup_checkpoint=None), log=quiet)
    assert phases == [2, 3, 3]
    b = run(dataclasses.replace(base, out=str(tmp_path / "b"), align="label", grl_weight=0.5), log=quiet)
    assert warm.is_file() and phases == [2, 3, 3, 2, 3, 3]  # saved after iteration 1, then went on
    c = run(dataclasses.replace(base, out=str(tmp_path / "c")), log=quiet)
    assert phases == [2, 3, 3, 2, 3, 3, 3]  # only the aligned iteration
    wa, wc = trainers[0].state.model.state_dict(), trainers[2].state.model.state_dict()
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert [p["name"] for p in c["phases"]] == [p["name"] for p in a["phases"]] == ["sdr", "iteration 1", "iteration 2"]
    assert c["phases"][:2] == json.loads(json.dumps(b["phases"][:2]))
    assert c["phases"][2]["align"] == "both" and c["phases"][2]["step"] == 8
    assert (tmp_path / "c" / "graphs" / "iter1.jsonl.gz").read_bytes() == (tmp_path / "b" / "graphs" / "iter1.jsonl.gz").read_bytes()
    assert {f.name for f in (tmp_path / "c" / "examples").glob("*.png")} == {f.name for f in (tmp_path / "a" / "examples").glob("*.png")}
    with pytest.raises(InputError, match="other settings"):
        run(dataclasses.replace(base, out=str(tmp_path / "d"), score_threshold=0.9), log=quiet)


def test_synthesis_is_the_same_with_and_without_worker_processes(tmp_path):
    env = load_env("clevr")
    graphs = list(sample_scenes(env, seed=9, count=16))
    names = [f"{i:06d}" for i in range(16)]
    opts = render_options(env, 48, 48)
    lib = texture_library(tmp_path)
    a = synthesize(graphs, names, env, opts, "cpu", np.random.default_rng(3), lib, batch=8, workers=0)
    b = synthesize(graphs, names, env, opts, "cpu", np.random.default_rng(3), lib, batch=8, workers=2)
    assert [s.name for s in a] == names == [s.name for s in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.instance, y.instance)
        assert x.objects == y.objects and x.relations == y.relations


def test_summary_carries_every_recall_k():
    """Tables pick R@20 (clevr) or R@50 (dining, driving) from the same phase summary."""
    from sim2sg.loop.run import summarize

    gc = {"R@20": 0.2, "R@50": 0.5, "R@100": 0.7}
    m = {"detection": {"mAP@0.5": 0.9, "AP@0.5": {"cube": 0.9}},
         "relations": {"graph_constraint": gc, "no_graph_constraint": {"R@50": 0.6},
                       "ceiling": {"graph_constraint": {"R@50": 0.8}}}}
    s = summarize(m)
    assert (s["R@20"], s["R@50"], s["R@100"], s["R@50 ceiling"], s["ngR@50"]) == (0.2, 0.5, 0.7, 0.8, 0.6)
    assert s["ngR@20"] is None and summarize(None) == {}


def test_target_batchnorm_changes_only_what_is_predicted_on_the_target(target, tmp_path):
    """With target_bn the evaluation also records the training-statistics metrics, and those are
    exactly the metrics of the same run without target_bn: re-estimating BatchNorm statistics for
    prediction never touches training."""
    from sim2sg.dataset.render_job import write_samples

    torch.set_num_threads(1)
    root, samples = target
    write_samples(tmp_path / "eval", samples, ("coco", "sg"), "eval", {"env": "clevr-target"})
    runs = {}
    for bn in (False, True):
        cfg = LoopConfig(env="clevr", target=str(root / "images"), out=str(tmp_path / f"run{bn}"), align="none",
                         iterations=1, sdr_scenes=4, width=64, height=64, sdr_steps=2, iter_steps=2, batch_size=2,
                         lr_warmup_steps=1, eval_data=str(tmp_path / "eval"), progress=False, target_bn=bn,
                         target_bn_images=3, model={"box_score_thresh": 0.0})
        runs[bn] = run(cfg, log=lambda m: None)
    plain, adabn = runs[False], runs[True]
    assert "final_source_bn" not in plain and "summary_source_bn" not in plain["phases"][0]
    for p0, p1 in zip(plain["phases"], adabn["phases"]):
        assert p1["summary_source_bn"] == p0["summary"]
    assert adabn["final_source_bn"] == plain["final"]
    # the re-estimated statistics do change the predictions on the target
    assert adabn["phases"][-1]["metrics"] != plain["phases"][-1]["metrics"]
    # each run leaves its model; the AdaBN one carries the target's BatchNorm statistics and
    # otherwise the very same weights
    from sim2sg.train.checkpoint import load_checkpoint

    m0, m1 = (load_checkpoint(tmp_path / f"run{bn}" / "checkpoint.pt") for bn in (False, True))
    assert (m0["meta"]["target_batchnorm"], m1["meta"]["target_batchnorm"]) == (False, True)
    stats = [k for k in m0["model"] if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(m0["model"][k], m1["model"][k]) for k in stats)
    assert all(torch.equal(v, m1["model"][k]) for k, v in m0["model"].items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_the_target_true_graphs_hold_the_visible_objects(tmp_path):
    """The content gap compares generated graphs with what the target images show: the domain's
    true graphs keep exactly the labelled (visible) objects of each image."""
    from sim2sg.experiments.tables import make_domain

    torch.set_num_threads(1)
    dom = make_domain("driving-target", tmp_path / "dom", 3, 1, 160, 48, "cpu")
    labels = json.loads((dom.train_labelled / "labels.json").read_text())
    per_image = {im["id"]: 0 for im in labels["images"]}
    for a in labels["annotations"]:
        per_image[a["image_id"]] += 1
    env = load_env("driving-target")
    files = sorted(dom.train_graphs.glob("*.json"))
    counts = [len(list(sg.objects(sg.read_graph(f, env.categories, env.predicates)))) for f in files]
    assert counts == [per_image[im["id"]] for im in sorted(labels["images"], key=lambda im: im["file_name"])]
    from sim2sg.scene.sdr import sample_scene, scene_rng

    full = [sample_scene(env, scene_rng(1000, i)) for i in range(3)]  # make_domain's default seed
    assert sum(counts) < sum(len(list(sg.objects(g))) for g in full)  # a town hides some objects


def test_deterministic_enters_the_checkpoint_keys_only_when_on():
    """A repeatable run (`deterministic`) never continues from a state that nondeterministic
    kernels made, and the states saved before the option existed keep their keys."""
    import dataclasses

    from sim2sg.loop.state import sdr_key

    def _sdr_key(cfg):
        return json.loads(sdr_key(cfg))
    from sim2sg.loop.state import warmup_key

    off = LoopConfig(env="clevr", target="t", out="o")
    on = dataclasses.replace(off, deterministic=True)
    assert "deterministic" not in json.loads(warmup_key(off)) and "deterministic" not in _sdr_key(off)
    assert json.loads(warmup_key(on))["deterministic"] is True and _sdr_key(on)["deterministic"] is True
    rest = lambda d: {k: v for k, v in d.items() if k != "deterministic"}
    assert rest(json.loads(warmup_key(on))) == json.loads(warmup_key(off)) and rest(_sdr_key(on)) == _sdr_key(off)


def test_cpu_training_is_reproducible_with_two_threads():
    """Same seed, same bytes: two identical trainings on the CPU with 2 threads end with identical
    weights (without deterministic kernels some thread-ordered accumulation made them differ)."""
    from sim2sg.loop.run import make_trainer, train_phase
    from sim2sg.scene.sdr import sample_scene, scene_rng

    env = load_env("clevr")
    graphs = [sample_scene(env, scene_rng(0, i)) for i in range(16)]
    samples = synthesize(graphs, [str(i) for i in range(16)], env, render_options(env, 96, 96), "cpu",
                         np.random.default_rng(0), texture_library(Path(tempfile.mkdtemp())))
    ds = SampleDataset(samples, list(env.predicates))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        states = []
        for _ in range(2):
            cfg = LoopConfig(env="clevr", target="", out="", width=96, height=96, batch_size=4, sdr_steps=10,
                             iterations=1, iter_steps=4, lr_warmup_steps=2, device="cpu", progress=False)
            tr = make_trainer(cfg, env)
            train_phase(tr, ds, None, 10, "none")
            states.append(tr.state.model.state_dict())
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())


def test_keep_sdr_trains_iterations_on_generated_and_sdr_scenes(target, tmp_path, monkeypatch):
    """With keep_sdr an iteration's training set is the generated scenes plus the SDR scenes, the
    SDR scenes marked to stay out of the domain losses unless align_sdr_scenes; the report's
    examples come from scenes generated from target predictions."""
    import sim2sg.loop.run as loop

    torch.set_num_threads(1)
    root, _ = target
    sizes, marks = [], []
    real = loop.train_phase

    def spy(tr, source, *a, **k):
        sizes.append(len(source))
        marks.append([source[i][1].get("domain_source", True) for i in range(len(source))])
        return real(tr, source, *a, **k)

    monkeypatch.setattr(loop, "train_phase", spy)
    base = dict(env="clevr", target=str(root / "images"), align="label", iterations=1, sdr_scenes=3, width=64,
                height=64, sdr_steps=1, iter_steps=1, batch_size=2, lr_warmup_steps=1, score_threshold=0.0,
                progress=False)
    h = run(LoopConfig(out=str(tmp_path / "a"), keep_sdr=True, **base), log=lambda m: None)
    run(LoopConfig(out=str(tmp_path / "b"), **base), log=lambda m: None)
    assert sizes == [3, 4 + 3, 3, 4]  # SDR phase, iteration 1 (4 target images, 1 scene each)
    assert marks[1] == [True] * 4 + [False] * 3 and all(marks[0]) and all(marks[3])
    run(LoopConfig(out=str(tmp_path / "c"), keep_sdr=True, align_sdr_scenes=True, **base), log=lambda m: None)
    assert marks[5] == [True] * 7
    it1 = h["phases"][1]
    # (an untrained model's boxes: most lift, those far off the ground area do not)
    shown = it1["example_targets"]
    assert it1["lifted"] >= 2 and len(shown) == it1["lifted"] and shown == sorted(set(shown)) and min(shown) >= 0


def test_a_finished_row_of_the_same_configuration_is_kept(target, tmp_path, monkeypatch):
    """tables.py can be called again on the same folder: finished rows of the same configuration
    are kept, unfinished ones and other configurations are trained."""
    import dataclasses

    from sim2sg.experiments import tables as experiment

    root, _ = target
    cfg = LoopConfig(env="clevr", target=str(root / "images"), out=str(tmp_path / "real"), align="none",
                     iterations=0, sdr_scenes=2, width=64, height=64, sdr_steps=1, batch_size=2, lr_warmup_steps=1,
                     progress=False)
    run(cfg, log=lambda m: None)  # the config as the loop itself writes it
    path = tmp_path / "real" / "history.json"
    assert experiment.complete_history(path, cfg) == json.loads(path.read_text())
    assert experiment.complete_history(path, dataclasses.replace(cfg, lr=5e-3)) is None
    unfinished = {k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}
    path.write_text(json.dumps(unfinished))
    assert experiment.complete_history(path, cfg) is None
    assert experiment.complete_history(tmp_path / "missing.json", cfg) is None

    trained = []

    def fake_run(c, log=print):
        trained.append(Path(c.out).name)
        h = {"config": json.loads(json.dumps(dataclasses.asdict(c), default=str)), "phases": [], "seconds": 1.0}
        Path(c.out).mkdir(parents=True, exist_ok=True)
        (Path(c.out) / "history.json").write_text(json.dumps(h))
        return h

    monkeypatch.setattr(experiment, "run", fake_run)
    domain = experiment.Domain(tmp_path, tmp_path / "i", tmp_path / "l", tmp_path / "g", tmp_path / "e")
    base = dataclasses.replace(cfg, out="")
    experiment.run_rows(["SDR", "all (Sim2SG)"], "clevr", domain, tmp_path / "t", base, log=lambda m: None,
                        keep_complete=True)
    experiment.run_rows(["all (Sim2SG)", "oracle"], "clevr", domain, tmp_path / "t", base, log=lambda m: None,
                        keep_complete=True)
    assert trained == ["sdr", "all__sim2sg", "oracle"]
    experiment.run_rows(["all (Sim2SG)"], "clevr", domain, tmp_path / "t", dataclasses.replace(base, lr=5e-3),
                        log=lambda m: None, keep_complete=True)
    experiment.run_rows(["SDR"], "clevr", domain, tmp_path / "t", base, log=lambda m: None)
    assert trained == ["sdr", "all__sim2sg", "oracle", "all__sim2sg", "sdr"]


def test_curves_plot_every_row_over_its_steps(tmp_path):
    """One PNG, written atomically, from rows with and without a content gap (SDR, oracle)."""
    import cv2

    from sim2sg.experiments.report import curves

    gap = {"count_tv": 0.4, "position_w1": 0.2, "predicate_tv": 0.0}
    results = {
        "SDR": {"phases": [{"name": "sdr", "step": 10, "summary": {"mAP@0.5": 0.5, "R@50": 0.1}, "content_gap": gap},
                           {"name": "sdr (continued)", "step": 30, "summary": {"mAP@0.5": 0.6, "R@50": 0.12}}]},
        "all (Sim2SG)": {"phases": [{"name": "sdr", "step": 10, "summary": {"mAP@0.5": 0.5}, "content_gap": gap},
                                    {"name": "iteration 1", "step": 30, "summary": {"mAP@0.5": 0.7},
                                     "content_gap": dict(gap, count_tv=0.1)}]},
        "oracle": {"phases": [{"name": "oracle", "step": 30, "summary": {"mAP@0.5": 0.9, "R@50": 0.2}}]},
        "unfinished": {"phases": []},
    }
    curves(results, tmp_path / "c.png", k=50)
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img is not None and img.shape[1] > img.shape[0] > 100
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]


def test_seeds_table_gives_mean_std_gaps_per_run_and_paired_differences():
    from sim2sg.experiments.report import seeds_table

    def run(sdr, label, sim, oracle):
        h = lambda m: {"final": {"mAP@0.5": m, "R@20": m / 10, "AP@0.5": {"cube": m}}}
        return {"SDR": h(sdr), "sigma_c,label": h(label), "all (Sim2SG)": h(sim), "oracle": h(oracle)}

    text = seeds_table([run(0.5, 0.6, 0.7, 1.0), run(0.7, 0.8, 0.8, 0.9)], ["cube"], k=20)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines() if line.startswith("| ")}
    assert rows["SDR"][2] == "0.600 +- 0.141"  # mAP: mean 0.6, std (ddof 1) of 0.5, 0.7
    # gap closed within each run: (0.7 - 0.5) / 0.5 = 40%, (0.8 - 0.7) / 0.2 = 50%
    assert rows["all (Sim2SG)"][5] == "45 +- 7"
    assert "| all (Sim2SG) - sigma_c,label | +0.050 +- 0.071 |" in text
    assert "| sigma_c,label - SDR | +0.100 +- 0.000 |" in text
    one = seeds_table([run(0.5, 0.6, 0.7, 1.0), {"SDR": run(0.5, 0, 0, 0)["SDR"]}], ["cube"], k=20)
    assert "all (Sim2SG)" not in one  # only rows every run has
