"""Scene commands: `sim2sg envs`, `sim2sg sample` and `sim2sg graph2usd`."""

from __future__ import annotations

from pathlib import Path

import typer
from sim2sg.cli.common import fail, out_dir, plural, seed_option, user_errors


def envs() -> None:
    """List the built-in environments."""
    from sim2sg.scene.environment import builtin_names, load_env

    rows = [(name, ", ".join(e.categories), e.description) for name, e in ((n, load_env(n)) for n in builtin_names())]
    widths = [max(len(r[k]) for r in rows) for k in range(2)]  # columns as wide as their longest entry
    for name, cats, desc in rows:
        typer.echo(f"{name:{widths[0]}s}  {cats:{widths[1]}s}  {desc}")


def sample(
    env: str = typer.Option("clevr", "--env", help="Built-in environment name (clevr, dining, driving) or a .toml file."),
    count: int = typer.Option(10, "--count", min=1, help="Number of scenes."),
    seed: int = seed_option("Run seed: scene i uses SeedSequence(seed, spawn_key=(i,))."),
    out: Path = typer.Option(..., "--out", help="Output folder; graphs go to OUT/graphs/NNNNNN.json."),
    start: int = typer.Option(0, "--start", min=0, help="Index of the first scene (to extend or shard a run)."),
) -> None:
    """Sample scene graphs with structured domain randomization."""
    from tqdm import tqdm

    from sim2sg.scene import graph as sg
    from sim2sg.scene.environment import load_env
    from sim2sg.scene.sdr import sample_scene, scene_rng

    out_dir(out)
    with user_errors():
        e = load_env(env)
        folder = out / "graphs"
        # total: tqdm's len() of a range past 2**63 - 1 scenes raised OverflowError
        for i in tqdm(range(start, start + count), total=count, desc=f"sample {e.name}", unit="scene",
                      disable=None):
            path, g = folder / f"{i:06d}.json", sample_scene(e, scene_rng(seed, i))
            # a re-run writes the same scenes again; another --seed or --env must not replace them
            if path.is_file() and path.read_bytes() != sg.to_json(g).encode("utf-8"):
                fail(f"{path}: holds another scene (of another --env or --seed), which this run would replace; "
                     f"choose another --out or --start, or delete {folder} first")
            sg.write_graph(path, g)
    typer.echo(f"wrote {plural(count, 'graph')} to {folder}")


def graph2usd(
    inputs: list[Path] = typer.Argument(..., help="Scene-graph JSON files or folders of them."),
    out: Path = typer.Option(..., "--out", help="Output folder for stages (and textures/)."),
    seed: int = seed_option("Look seed: each stage's randomization comes from (seed, graph name)."),
    fmt: str = typer.Option("usdc", "--format", help="usdc (binary) or usda (text)."),
    env: str = typer.Option(None, "--env", help="Environment name or .toml (default: each graph's own env)."),
) -> None:
    """Compile scene graphs into OpenUSD stages with materials, textures, lights and a camera."""
    from tqdm import tqdm

    from sim2sg.scene.environment import load_env
    from sim2sg.usd.compile import graph2usd as compile_all
    from sim2sg.usd.compile import graph_files

    out_dir(out)
    with user_errors():
        e = load_env(env) if env else None
        files = graph_files(inputs)
        bar = tqdm(total=len(files), desc="graph2usd", unit="stage", disable=None)
        result = compile_all(files, out, seed=seed, fmt=fmt, env=e, progress=lambda _: bar.update())
        bar.close()
    for err in result.failed:
        typer.echo(f"error: {err}", err=True)
    typer.echo(f"wrote {plural(len(result.written), 'stage')} to {out}")
    if result.failed:
        fail(f"{len(result.failed)} of {len(files)} graphs failed")


def register(app: typer.Typer) -> None:
    app.command("envs")(envs)
    app.command("sample")(sample)
    app.command("graph2usd")(graph2usd)
