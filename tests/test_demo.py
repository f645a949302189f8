"""`sim2sg demo` end to end on a micro preset (the real presets are sized for minutes, not tests)."""

import dataclasses
import json
import re
from html.parser import HTMLParser

import cv2
import pytest
import torch
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.experiments import demo

MICRO = dataclasses.replace(demo.PRESETS["small"], size=32, n_target=4, n_eval=3, n_source=4, iterations=2,
                            sdr_steps=2, iter_steps=1, batch=2, score_threshold=0.0, min_fit_iou=0.0)


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        self.tables += tag == "table"
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


@pytest.mark.slow
def test_demo_writes_a_complete_report_and_keeps_one_model_per_row(tmp_path):
    torch.set_num_threads(1)
    lines = []
    report = demo.run_demo(tmp_path, device="cpu", preset=MICRO, log=lines.append)
    # the report: every file, well formed
    table = (report / "table.md").read_text()
    for row in ("SDR", "all (Sim2SG)", "oracle"):
        assert f"| {row} |" in table
    assert "gap closed mAP" in table and "fast network (resnet10-half), 32x32 px" in table  # says what the preset did
    assert "SDR in mAP@0.5" in table  # and, in one sentence, whether Sim2SG beat SDR
    assert "Its content gap: count TV" in table  # and how the graphs it trained on moved
    res = json.loads((report / "results.json").read_text())
    assert list(res) == ["SDR", "all (Sim2SG)", "oracle"]
    assert [p["name"] for p in res["all (Sim2SG)"]["phases"]] == ["sdr", "iteration 1", "iteration 2"]
    # both rows fork from one shared SDR phase, so they agree on it exactly
    assert res["SDR"]["phases"][0]["metrics"] == res["all (Sim2SG)"]["phases"][0]["metrics"]
    for png in ("curves.png", "figure.png"):
        img = cv2.imread(str(report / png))
        assert img is not None and min(img.shape[:2]) > 100
    page = (report / "index.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert parser.tables >= 2 and len(parser.srcs) == 2  # results + content gap; curves + figure
    for src in parser.srcs:  # embedded, so the page needs nothing beside it
        assert src.startswith("data:image/png;base64,")
    assert "http" not in page
    # progress: phase k of n with the time left, n known from the start
    steps = [re.match(r"-- phase (\d+) of (\d+) done", m) for m in lines]
    steps = [(int(m[1]), int(m[2])) for m in steps if m]
    assert [k for k, _ in steps] == list(range(1, len(steps) + 1)) and {n for _, n in steps} == {len(steps)}
    assert any("left" in m for m in lines if m.startswith("-- phase 2 "))
    assert re.search(r"holds \d+ MB", lines[-1])
    # output: one model per row, nothing shared or resumable left
    pts = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt"))
    assert pts == ["runs/all__sim2sg/checkpoint.pt", "runs/oracle/checkpoint.pt", "runs/sdr/checkpoint.pt"]
    ckpt = torch.load(tmp_path / "runs/sdr/checkpoint.pt", weights_only=True)
    assert "optimizer" not in ckpt and ckpt["model_config"]["arch"] == "fast"
    r = CliRunner().invoke(app, ["eval", "--checkpoint", str(tmp_path / "runs/sdr/checkpoint.pt"),
                                 "--data", str(tmp_path / "clevr-target/eval"), "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output


def test_a_preset_run_with_another_network_says_which():
    full = demo.PRESETS["full"].with_arch("frcnn")
    assert full.describe().startswith("frcnn network (resnet18)") and full.loop_config("o", "cpu", 0).arch == "frcnn"
    small = demo.PRESETS["small"].with_arch("frcnn")  # resnet10-half is the fast network's body only
    assert small.describe().startswith("frcnn network (resnet18)")
    assert small.loop_config("o", "cpu", 0).backbone == "resnet18"
    assert demo.PRESETS["small"].with_arch(None) == demo.PRESETS["small"]


def test_progress_counts_the_loops_phase_lines():
    out = []
    p = demo.Progress([("a", 1.0), ("b", 3.0)], out.append)
    p.log("[sdr] step 10 (3 s)  mAP@0.5 0.1")
    p.log("[warm-up] continuing at iteration 2 from X")  # not a phase end
    assert out[1].startswith("-- phase 1 of 2 done (a): 0:00 elapsed, about 0:00 left")
    assert len(out) == 3
    p.done()
    assert out[-1].startswith("-- phase 2 of 2 done (b)") and "left" not in out[-1]


def test_presets_plan_every_phase_the_loop_logs():
    names = [n for n, _ in demo.plan(demo.PRESETS["full"], demo.PRESETS["full"].loop_config("o", "cpu", 0))]
    # shared SDR phase, warm-up (SDR + iteration 1), SDR row (2), label and all (iterations 2, 3), oracle
    assert len(names) == 1 + 1 + 2 + 2 + 2 + 2 + 1 + 1
    small = demo.PRESETS["small"]
    assert small.arch == "fast" and "oracle" in small.rows and "SDR" in small.rows
    # its light body is the fast network's: `--model frcnn` falls back to torchvision's resnet18
    assert small.loop_config("o", "cpu", 0).backbone == "resnet10-half"
    frcnn = small.loop_config("o", "cpu", 0, arch="frcnn")
    assert frcnn.backbone == "resnet18" and frcnn.arch == "frcnn"
    frcnn.validate()


@pytest.mark.parametrize("preset,device,seconds", [
    # phase times of measured runs (benchmarks/log/2026-12-07-session5-gpu.md): the full preset on an
    # H100, the small one on the 2-core CPU
    ("full", "cuda", [33, 57, 15, 29, 14, 48, 39, 32, 55, 47, 96, 3]),
    ("small", "cpu", [30, 79, 17, 109, 15, 67, 120, 133, 140, 3]),
])
def test_the_time_left_estimate_fits_measured_runs(preset, device, seconds):
    p = demo.PRESETS[preset]
    weights = [w for _, w in demo.plan(p, p.loop_config("o", device, 0))]
    assert len(weights) == len(seconds)
    for k in range(1, 7):  # "phase k of n done: ..., about T left", as `Progress` computes T
        estimate = sum(seconds[:k]) / sum(weights[:k]) * sum(weights[k:])
        assert estimate == pytest.approx(sum(seconds[k:]), rel=0.15), k


def test_unknown_preset_is_one_line():
    r = CliRunner().invoke(app, ["demo", "--preset", "huge"])
    assert r.exit_code == 2 and "error: --preset 'huge'" in r.output


@pytest.mark.parametrize("args, message", [(["--device", "bogus"], "error: --device: unknown device 'bogus'"),
                                           (["--out", "FILE"], "exists and is not a folder")])
def test_bad_device_or_out_is_one_line_before_any_work(tmp_path, args, message):
    """Found by fuzzing: --device bogus ran the whole demo on the CPU, --device cuda without a GPU
    was a traceback, cuda:1 ran on cuda:0; an --out file failed after the first log line."""
    (tmp_path / "f").write_text("x")
    args = [str(tmp_path / "f") if a == "FILE" else a for a in args]
    out = ["--out", str(tmp_path / "o")] if "--out" not in args else []
    r = CliRunner().invoke(app, ["demo", *out, *args])
    assert r.exit_code == 2 and message in r.output and "sim2sg demo (" not in r.output, r.output
    assert not (tmp_path / "o").exists()


def test_the_demo_runs_on_the_device_named(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = {}

    def stop(kind, root, *a, **kw):
        seen["device"] = a[4] if len(a) > 4 else kw.get("device")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "make_domain", stop)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo("unused", device="cuda:1", log=lambda _: None)
    assert seen["device"] == "cuda:1"


def test_the_report_says_how_each_content_gap_measure_moved():
    from sim2sg.experiments.page import gap_trend

    def phase(tv, w1, w1_any):
        return {"content_gap": {"count_tv": tv, "position_w1": w1, "position_w1_any": w1_any}}

    # the CPU demo's seed 0: count and any-class position fall every time, per-class position rises
    h = {"phases": [phase(0.451, 0.222, 0.180), phase(0.434, 0.392, 0.151), phase(0.298, 0.342, 0.1509),
                    phase(0.232, 0.375, 0.081), {"name": "final"}]}
    assert gap_trend(h) == ("count TV 0.451 -> 0.232 (fell at every iteration); position W1 per class 0.222 -> "
                            "0.375 m (rose); position W1 of any class 0.180 -> 0.081 m (fell at every iteration)")
    h = {"phases": [phase(0.4, 0.2, None), phase(0.5, 0.19, None), phase(0.3, 0.21, None)]}
    assert gap_trend(h) == ("count TV 0.400 -> 0.300 (fell, not at every iteration); "
                            "position W1 per class 0.200 -> 0.210 m (rose)")
    assert gap_trend({"phases": [phase(0.4, 0.2, 0.1)]}) == ""
