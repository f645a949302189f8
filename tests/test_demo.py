"""`sim2sg demo` end to end on a micro preset (the real presets are sized for minutes, not tests)."""

import torch
from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.experiments import demo


def test_demo_writes_report(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    micro = demo.Preset(size=64, n_target=4, n_eval=3, n_source=4, iterations=1, sdr_steps=2,
                        iter_steps=1, batch=2, rows=("SDR", "all (Sim2SG)"))
    monkeypatch.setitem(demo.PRESETS, "small", micro)
    report = demo.run_demo(tmp_path, device="cpu", preset="small", log=lambda m: None)
    table = (report / "table.md").read_text()
    assert "| SDR |" in table and "| all (Sim2SG) |" in table and "mAP@0.5" in table
    assert "small preset (2 SDR steps at 64x64)" in table  # the reader is told what the numbers are
    assert (report / "curves.png").stat().st_size > 0 and (report / "figure.png").stat().st_size > 0
    # both rows fork from one shared SDR phase, so they agree on it exactly
    import json

    res = json.loads((report / "results.json").read_text())
    sdr = [h["phases"][0] for h in res.values()]
    assert all(p["name"] == "sdr" for p in sdr) and sdr[0]["metrics"] == sdr[1]["metrics"]
    assert (tmp_path / "runs" / "sdr_phase.pt").is_file()


def test_unknown_preset_is_one_line():
    r = CliRunner().invoke(app, ["demo", "--preset", "huge"])
    assert r.exit_code == 2 and "error: --preset 'huge'" in r.output
