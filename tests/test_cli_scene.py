"""`sim2sg envs`, `sample` and `graph2usd` through Typer's CliRunner."""

from sim2sg.cli.app import app
from typer.testing import CliRunner

from sim2sg.usd.stage import validate

runner = CliRunner()


def test_sample_then_graph2usd(tmp_path):
    r = runner.invoke(app, ["sample", "--env", "dining", "--count", "3", "--seed", "4", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    graphs = sorted((tmp_path / "graphs").glob("*.json"))
    assert [p.name for p in graphs] == ["000000.json", "000001.json", "000002.json"]
    r = runner.invoke(app, ["graph2usd", str(tmp_path / "graphs"), "--out", str(tmp_path / "usd"), "--format", "usda"])
    assert r.exit_code == 0, r.output
    stages = sorted((tmp_path / "usd").glob("*.usda"))
    assert len(stages) == 3 and all(validate(p) == [] for p in stages)


def test_bad_file_is_named_and_exit_is_nonzero(tmp_path):
    runner.invoke(app, ["sample", "--count", "2", "--out", str(tmp_path)])
    (tmp_path / "graphs" / "000009.json").write_text('{"format": "sim2sg-scene-graph", "version": 1, "env": "clevr"}')
    r = runner.invoke(app, ["graph2usd", str(tmp_path / "graphs"), "--out", str(tmp_path / "usd")])
    assert r.exit_code == 2
    assert "000009.json: camera: missing required field" in r.output
    assert "Traceback" not in r.output
    assert len(list((tmp_path / "usd").glob("*.usdc"))) == 2


def test_unknown_env_is_one_line(tmp_path):
    r = runner.invoke(app, ["sample", "--env", "mars", "--out", str(tmp_path)])
    assert r.exit_code == 2 and r.output.strip().startswith("error: mars: env: unknown environment")


def test_envs_lists_builtins():
    r = runner.invoke(app, ["envs"])
    assert r.exit_code == 0 and all(n in r.output for n in ("clevr", "dining", "driving"))
