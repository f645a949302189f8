"""`graph2usd`: compile scene-graph files into USD stages with their textures.

Each graph gets its own look generator from (seed, graph file stem), so a stage is reproducible
alone, whatever else is compiled with it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import networkx as nx
import numpy as np
from pxr import Usd

from sim2sg import atomic
from sim2sg.checks import read_json
from sim2sg.errors import InputError
from sim2sg.scene import graph as sg
from sim2sg.scene.environment import Environment, load_env
from sim2sg.scene.look import Look, check_materials, randomize_look
from sim2sg.scene.textures import texture_image
from sim2sg.usd.stage import TEXTURE_DIR, build_stage, write_stage

FORMATS = ("usda", "usdc")


def look_rng(seed: int, name: str) -> np.random.Generator:
    """The look generator of graph `name` (its file stem) in a run with `seed`."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))]))


def compile_graph(g: nx.MultiDiGraph, env: Environment, look: Look,
                  texture_root: str = f"./{TEXTURE_DIR}") -> tuple[Usd.Stage, list[str]]:
    """Build graph `g` dressed by `look` (drawn upstream: `randomize_look`, optionally
    `apply_target_look`) as an in-memory stage; returns the stage and the texture names it uses.
    env: the vocabularies and each category's mesh. texture_root: see `build_stage` (default:
    beside the stage). No randomness."""
    mesh_of = {c: env.spec(c).mesh for c in env.categories}
    missing = sorted({a["category"] for _, a in g.nodes(data=True)} - set(mesh_of))
    if missing:
        raise InputError(env.source, "categories", f"no mesh for categories {missing} used by the graph")
    stage = build_stage(g, look, mesh_of, list(env.categories), list(env.predicates), str(texture_root))
    return stage, look.textures()


def write_textures(out_dir: Path, names: Iterable[str]) -> None:
    """Write texture PNGs `out_dir/textures/NAME.png` that are not there yet (atomically)."""
    for name in names:
        path = out_dir / TEXTURE_DIR / f"{name}.png"
        if path.exists():
            continue
        family, variant = name.rsplit("_", 1)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(texture_image(family, int(variant)), cv2.COLOR_RGB2BGR))
        atomic.write_bytes(path, buf.tobytes())


def graph_files(inputs: Iterable[Path]) -> list[Path]:
    """Graph JSON files named by `inputs` (files, or folders searched for *.json), sorted per
    folder, each file once."""
    out: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.json")) or sorted((p / "graphs").glob("*.json"))
            if not found:
                raise InputError(p, "", "no *.json scene graphs in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise InputError(p, "", "no such file or folder")
    unique = {f.resolve(): f for f in reversed(out)}  # a file named twice is compiled once
    return [f for f in out if unique[f.resolve()] is f]


@dataclass(frozen=True)
class CompileResult:
    written: list[Path]
    failed: list[InputError]


def graph2usd(
    files: list[Path],
    out_dir: Path,
    seed: int = 0,
    fmt: str = "usdc",
    env: Environment | None = None,
    progress: Callable[[Path], None] | None = None,
) -> CompileResult:
    """Compile each graph file into `out_dir/<stem>.<fmt>` plus `out_dir/textures/`.

    env: the environment for vocabularies and looks; None takes each graph's `env` (a built-in
    name). A bad graph is recorded in `failed` and the others still compile.
    """
    if fmt not in FORMATS:
        raise InputError("--format", "format", f"expected one of {', '.join(FORMATS)}, got {fmt!r}")
    for path in files:  # before any work: `sim2sg render OUT` would take both stages of a graph
        other = out_dir / f"{path.stem}.{FORMATS[1 - FORMATS.index(fmt)]}"
        if other.exists():
            raise InputError(other, "", f"a stage of graph {path} in the other format is here already, and `sim2sg "
                                        f"render` would render both: compile into another --out, or delete it first")
    envs: dict[str, Environment] = {}
    written, failed, stems = [], [], {}
    for path in files:
        try:
            e = env
            if path.stem in stems:  # dir1/a.json and dir2/a.json: both would write OUT/a.usdc
                raise InputError(path, "", f"its stage {path.stem}.{fmt} would replace that of {stems[path.stem]}: "
                                           "compile it into another --out")
            stems[path.stem] = path
            if e is None:
                name = _peek_env(path)
                if name not in envs:
                    envs[name] = load_env(name)
                e = envs[name]
            g = sg.read_graph(path, e.categories, e.predicates)
            if "kind" not in g.graph["context"]:
                raise InputError(path, "context.kind", "missing: no 3D scene to compile (a graph from `sim2sg "
                                                      "predict` holds 2D boxes only; give context.kind and real "
                                                      "positions and sizes)")
            check_materials(g, e, path)
            stage, textures = compile_graph(g, e, randomize_look(g, e, look_rng(seed, path.stem)))
            write_textures(out_dir, textures)
            target = out_dir / f"{path.stem}.{fmt}"
            write_stage(stage, target)
            written.append(target)
        except InputError as err:
            failed.append(err if env is not None else _env_hint(err, e))
        if progress:
            progress(path)
    return CompileResult(written, failed)


def _peek_env(path: Path) -> str:
    """The `env` name a graph file declares (validated fully later)."""
    data = read_json(path, "scene-graph file")
    if not isinstance(data, dict) or not isinstance(data.get("env"), str):
        raise InputError(path, "env", "missing environment name (or pass --env)")
    try:
        load_env(data["env"])
    except InputError:
        raise InputError(path, "env", f"unknown environment {data['env']!r}; pass --env FILE") from None
    return data["env"]


def _env_hint(err: InputError, e: Environment | None) -> InputError:
    """`err` with a hint when the environment named by the graph's `env` lacks a word of its
    vocabulary: a graph sampled from a custom file that kept a built-in `name` (say "clevr") is
    read against the built-in one, and only --env can tell them apart."""
    if e is None or not err.field.endswith((".category", ".predicate", ".material")):
        return err
    return InputError(err.source, err.field, f"{err.message}; the graph's `env` chose {e.source}: if the graph came "
                                             "from another environment file, pass --env FILE")
