"""The `sim2sg render` driver: USD stages in, a labelled dataset directory out, resumably.

Image NNNNNN is the stage at position NNNNNN of the sorted stage list. For each image the job writes
all its files (`sim2sg.dataset.writers`), then its label fragment `labels/NNNNNN.json` last, so a
fragment whose listed files all exist marks a finished image; a killed run resumes where it stopped
and a finished run re-run renders nothing. An image is redone when its stage's bytes (sha256), the
job's settings (size, ssaa, shadows, seed, env) or a requested writer differ from its fragment;
it is redone with its earlier writers too, so that none of its files describes the image it
replaced. labels.json is assembled from the fragments at the end (atomically, only when it
changes); a run that redoes images of other stage bytes or settings first deletes it (and the
CLEVR and VG collections), so that a killed re-render leaves none listing an image whose files
changed.

An existing folder is continued only when it holds this job's dataset: every image in it was
rendered from the stage now at its position (same path, or same bytes). Another dataset there
(images of other stages, more images than stages, a labels.json without fragments) is refused
with an `InputError` unless `overwrite`, which first deletes that dataset's files, so that no
image is silently replaced and none is left behind unlisted.

Rendering is injected (`render_fn`), so the driver is tested without the rasterizer; the default
is `render_stages` (USD files -> `sim2sg.usd.read.load_scene` -> `sim2sg.render.pipeline.render_scenes`;
imported lazily: torch is heavy). Render options come from `sim2sg.render.settings.render_options`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from sim2sg.dataset import coco as labels_mod
from sim2sg.dataset import vg
from sim2sg.dataset import writers as writers_mod
from sim2sg.errors import InputError
from sim2sg.render.sample import Sample

STAGE_SUFFIXES = (".usd", ".usda", ".usdc")

# (stage paths, `sim2sg.render.pipeline.RenderOptions`, device) -> one Sample per path.
RenderFn = Callable[[Sequence[Path], Any, str], list[Sample]]


# The default batch's pixel budget (rendered pixels, supersampling included): a rendered pixel
# holds ~500 bytes at its peak (colour, depth, id and coverage buffers, labels), so 16 images of
# 512x512 take ~2 GB on the CPU and 256 of 256x256 ~8 GB on a GPU. At 4096x4096 a default batch of
# 16 wanted ~130 GB and the process was killed.
BATCH_PIXELS = {"cpu": 16 * 512 * 512, "cuda": 256 * 256 * 256}
DEFAULT_BATCH = {"cpu": 16, "cuda": 256}


def default_batch(device_type: str, width: int, height: int, ssaa: int = 1) -> int:
    """Stages per batch when the user names none: CPU throughput peaks at 16-32 images a batch
    (benchmarks/RESULTS.md), a GPU wants hundreds; fewer where the images are large, so that a
    batch stays within `BATCH_PIXELS` (one image at least)."""
    kind = "cuda" if device_type == "cuda" else "cpu"
    return max(1, min(DEFAULT_BATCH[kind], BATCH_PIXELS[kind] // (width * height * ssaa * ssaa)))


@dataclass(frozen=True)
class RenderJob:
    """What to render and how.

    out_dir: dataset directory. width, height: image size in pixels. writers: names from
    `writers.WRITERS` ("coco" is always added). batch: stages per renderer call. ssaa: supersampling
    factor per axis. shadows: key-light shadows on/off. env: environment name or file whose
    `[render]` and `[appearance.post]` tables apply to every stage; None = each stage's own
    environment (the one named in its stored scene graph). seed: post-processing randomness.
    device: "cpu", "cuda", "cuda:N" (see `sim2sg.device.resolve_device`). split: CLEVR scene `split` field.
    overwrite: replace another dataset found in out_dir (see the module docstring) instead of refusing.
    """

    out_dir: Path
    width: int
    height: int
    writers: tuple[str, ...] = ("coco", "sg")
    batch: int = 16
    ssaa: int = 1
    shadows: bool = True
    env: str | None = None
    seed: int = 0
    device: str = "cpu"
    split: str = "train"
    overwrite: bool = False

    def fingerprint(self) -> dict:
        """The settings an image's outputs depend on (compared on resume)."""
        # "visibility": the rule for the visibility threshold at this size (images of earlier
        # releases, which did not scale it, are rendered again)
        return {"width": self.width, "height": self.height, "ssaa": self.ssaa, "shadows": self.shadows,
                "seed": self.seed, "env": self.env, "visibility": "area-scaled"}


@dataclass(frozen=True)
class JobReport:
    """total: stages; rendered: images written now; skipped: images already complete;
    failures: (stage path, one-line message) per stage that could not be rendered;
    labels: path of labels.json; undrawn: (stage path, ((prim path, type name), ...)) per stage
    rendered now with prims the renderer cannot draw (`Sample.skipped`; rendered without them)."""

    total: int
    rendered: int
    skipped: int
    failures: tuple[tuple[str, str], ...]
    labels: Path
    undrawn: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


# ---- inputs ----------------------------------------------------------------------------------
def discover_stages(source: str | Path) -> list[Path]:
    """A stage file -> [it]; a directory -> its `*.usd`, `*.usda`, `*.usdc` files, sorted by name.
    Raises `InputError` when nothing is found."""
    src = Path(source)
    if src.is_file():
        return [src]
    if not src.exists():
        raise InputError(src, "", "no such file or directory")
    stages = sorted(p for p in src.iterdir() if p.suffix in STAGE_SUFFIXES and p.is_file())
    if not stages:
        raise InputError(src, "", f"no USD stages ({', '.join('*' + s for s in STAGE_SUFFIXES)}) in this directory")
    return stages


def _default_env_of_stage(path: Path) -> str | None:
    """The environment named in a sim2sg stage's stored graph; None for other stages."""
    from sim2sg.usd.stage import read_graph_from_stage

    try:
        g, info = read_graph_from_stage(path)
    except InputError:
        return None  # not a sim2sg stage (or a broken one: the renderer reports it)
    return info.get("env") or g.graph.get("env")


def _default_load_env(name_or_path: str) -> Any:
    from sim2sg.scene.environment import load_env

    return load_env(name_or_path)


def render_stages(paths: Sequence[Path], options, device="cpu", env: str | None = None) -> list[Sample]:
    """The default `RenderFn`: load the USD stages at `paths` at the options' size and render them
    as one batch (`RenderOptions` options). Sample.name = the file stem. With `env` (a name or
    file), a stage without a sim2sg graph gets that environment's vocabularies and relations
    derived from 3D by its rules (`sim2sg.render.scene.with_environment_relations`).

    Raises `sim2sg.errors.InputError` for a bad stage (see `sim2sg.usd.read.load_scene`).
    """
    from sim2sg.render.pipeline import render_scenes
    from sim2sg.usd.read import load_scene

    scenes = [load_scene(p, options.width, options.height) for p in paths]
    if env is not None:
        from sim2sg.render.scene import with_environment_relations

        environment = _default_load_env(env)
        scenes = [with_environment_relations(s, environment) for s in scenes]
    return render_scenes(scenes, [Path(p).stem for p in paths], options, device)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- the job ---------------------------------------------------------------------------------
def run(
    stages: Sequence[Path],
    job: RenderJob,
    *,
    render_fn: RenderFn | None = None,
    env_of_stage: Callable[[Path], str | None] | None = None,
    load_env: Callable[[str], Any] | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: bool = True,
    shard: range | None = None,
) -> JobReport:
    """Render `stages` into `job.out_dir` (see the module docstring); returns a `JobReport`.

    A stage that fails with `InputError` is reported through `on_error(stage, message)` and listed
    in the report; the others still render. Other exceptions are bugs and propagate.
    `render_fn`, `env_of_stage` (stage -> environment name or None) and `load_env` default to the
    renderer, the stage's stored graph and `sim2sg.scene.environment.load_env`.
    shard: render only the images at these positions of `stages` (still named by their position)
    and leave labels.json alone; the report counts the shard's images only. This is how
    `sim2sg.dataset.shards` splits a job over workers; its driver then assembles labels.json.
    """
    from tqdm import tqdm

    from sim2sg.render.settings import environment_settings, render_options

    render_fn = render_fn or (functools.partial(render_stages, env=job.env) if job.env is not None else render_stages)
    env_of_stage = env_of_stage or _default_env_of_stage
    load_env = load_env or _default_load_env
    writers = writers_mod.parse_writers(job.writers)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}" for i in range(len(stages))]
    fingerprint = job.fingerprint()
    failures: list[tuple[str, str]] = []

    def fail(stage: Path, message: str) -> None:
        failures.append((str(stage), message))
        if on_error is not None:
            on_error(str(stage), message)

    _check_existing(out, stages, names, job.overwrite)

    # 1. which images are already done
    pending: list[tuple[int, str]] = []  # (index, stage sha256)
    # an image redone keeps its other writers' outputs (redone too): else its kitti/, yolo/, ...
    # files and vg/, clevr/ collections would stay behind, describing the image it replaced
    writers_of: dict[int, tuple[str, ...]] = {}
    changing: set[int] = set()
    indices = range(len(stages)) if shard is None else shard
    for i in indices:
        stage = stages[i]
        try:
            digest = file_sha256(stage)
        except OSError as e:
            fail(stage, f"{stage}: cannot read: {e.strerror or e}")
            continue
        frag = labels_mod.read_fragment(out, names[i])
        if (labels_mod.fragment_complete(out, frag)
                and frag.get("stage", {}).get("sha256") == digest
                and frag.get("config") == fingerprint
                and set(writers) <= set(frag.get("writers", []))):
            continue
        pending.append((i, digest))
        if frag is not None:
            writers_of[i] = writers_mod.parse_writers([*writers, *_known_writers(frag)])
            if (frag.get("stage") or {}).get("sha256") != digest or frag.get("config") != fingerprint:
                changing.add(i)  # its labels will change (not merely a file of it rewritten)
    skipped = len(indices) - len(pending) - len(failures)

    # 2. render settings per pending stage (environment), grouped into batches of equal settings
    # (each fragment records its environment's settings and the effective visibility threshold)
    env_cache: dict[str | None, tuple] = {}

    def settings_for(stage: Path) -> tuple:
        name = job.env if job.env is not None else env_of_stage(stage)
        if name not in env_cache:
            env = load_env(name) if name is not None else None
            options = render_options(env, job.width, job.height, seed=job.seed, ssaa=job.ssaa,
                                     shadows=job.shadows)
            settings = environment_settings(env) | {"min_visible_pixels_at_size": options.min_visible_pixels}
            env_cache[name] = (settings, options)
        return env_cache[name]

    batches: list[tuple[dict, Any, list[tuple[int, str]]]] = []
    for i, digest in pending:
        try:
            settings, options = settings_for(stages[i])
        except InputError as e:
            fail(stages[i], f"{stages[i]}: {e}")
            continue
        if batches and batches[-1][0] == settings and len(batches[-1][2]) < max(1, job.batch):
            batches[-1][2].append((i, digest))
        else:
            batches.append((settings, options, [(i, digest)]))

    # 3. render and write; labels.json and the collections describing images whose labels are about
    # to change go first, so that a killed run leaves none listing an image its files no longer match
    if changing:
        for name in (labels_mod.LABELS_FILE, labels_mod.CLEVR_SCENES_FILE, vg.SCENE_GRAPHS_FILE):
            (out / name).unlink(missing_ok=True)
    rendered = 0
    undrawn: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    bar = tqdm(total=len(indices), initial=skipped, disable=not progress, unit="img", desc="render",
               dynamic_ncols=True)
    try:
        for settings, options, items in batches:
            for (i, digest), sample in _render_isolating(render_fn, stages, items, options, job.device, fail):
                sample = dataclasses.replace(sample, name=names[i])
                these = writers_of.get(i, writers)
                frag = writers_mod.write_sample(out, sample, i, these, job.split)
                frag.update(stage={"path": str(stages[i]), "sha256": digest}, config=fingerprint,
                            settings=settings, writers=list(these))
                labels_mod.write_fragment(out, names[i], frag)
                if sample.skipped:
                    undrawn.append((str(stages[i]), tuple(sample.skipped)))
                rendered += 1
                bar.update(1)
    finally:
        bar.close()

    if shard is not None:
        return JobReport(len(indices), rendered, skipped, tuple(failures), out / labels_mod.LABELS_FILE,
                         tuple(undrawn))

    # 4. labels.json from every finished image
    done = [n for i, n in enumerate(names) if str(stages[i]) not in {f for f, _ in failures}]
    info = {"image_size": [job.width, job.height], "ssaa": job.ssaa, "shadows": job.shadows,
            "seed": job.seed, "writers": list(writers_mod.parse_writers([*writers, *chain(*writers_of.values())]))}
    labels_mod.assemble(out, done, info)
    return JobReport(len(stages), rendered, skipped, tuple(failures), out / labels_mod.LABELS_FILE, tuple(undrawn))


def _check_existing(out: Path, stages: Sequence[Path], names: list[str], overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, delete) a dataset in `out` that is not this job's: see the
    module docstring. Images of this job whose stage bytes or settings changed are not conflicts:
    they are re-rendered in place."""
    frag_dir = out / "labels"
    found = sorted(frag_dir.glob("*.json")) if frag_dir.is_dir() else []
    position = {n: i for i, n in enumerate(names)}
    conflicts: list[tuple[Path, dict | None, str]] = []
    for f in found:
        frag = labels_mod.read_fragment(out, f.stem)
        i = position.get(f.stem)
        stage = (frag or {}).get("stage") or {}
        if i is None:
            conflicts.append((f, frag, f"image {f.stem} has no stage at its position (the job has {len(stages)})"))
        elif frag is not None and not _same_stage(stage, stages[i]):
            conflicts.append((f, frag, f"image {f.stem} was rendered from {stage.get('path')}, not {stages[i]}"))
    stray = (out / labels_mod.LABELS_FILE).is_file() and not found
    if not conflicts and not stray:
        return
    if not overwrite:
        why = conflicts[0][2] if conflicts else "labels.json without the render job's labels/ fragments"
        raise InputError(out, "", f"holds another dataset ({why}; {len(conflicts)} image(s) differ): "
                                  "render into a new folder, or pass --overwrite to replace it")
    root = out.resolve()
    for f, frag, _ in conflicts:
        for rel in (frag or {}).get("files", []):
            p = (out / str(rel)).resolve()
            if p.is_relative_to(root) and p.is_file():  # only files of the dataset's own folder
                p.unlink()
        f.unlink(missing_ok=True)
    for name in (labels_mod.LABELS_FILE, labels_mod.CLEVR_SCENES_FILE):
        (out / name).unlink(missing_ok=True)


def _known_writers(frag: dict) -> list[str]:
    """The writer names a fragment records (unknown or malformed entries left out)."""
    names = frag.get("writers")
    return [n for n in names if n in writers_mod.WRITERS] if isinstance(names, list) else []


def _same_stage(recorded: dict, stage: Path) -> bool:
    try:
        if Path(str(recorded.get("path"))).resolve() == Path(stage).resolve():
            return True
        return recorded.get("sha256") == file_sha256(stage)
    except OSError:
        return False


def _render_isolating(render_fn: RenderFn, stages: Sequence[Path], items: list[tuple[int, str]],
                      options, device: str, fail: Callable[[Path, str], None]):
    """Yield ((index, sha256), Sample) for `items`; when a batch fails, render its stages one by one
    so that only the bad ones are reported."""
    paths = [stages[i] for i, _ in items]
    try:
        samples = render_fn(paths, options, device)
    except InputError as e:
        if len(items) == 1:
            fail(paths[0], str(e) if str(paths[0]) in str(e) else f"{paths[0]}: {e}")
            return
        for item in items:
            yield from _render_isolating(render_fn, stages, [item], options, device, fail)
        return
    if len(samples) != len(items):
        raise RuntimeError(f"render_fn returned {len(samples)} samples for {len(items)} stages")
    yield from zip(items, samples)


def write_samples(out_dir: str | Path, samples: Sequence[Sample], writers: Sequence[str] = ("coco", "sg"),
                  split: str = "train", info: dict | None = None) -> Path:
    """Write in-memory samples (e.g. rendered by `sim2sg.dataset.synthesize.synthesize`) as a sim2sg dataset
    folder, image i named samples[i].name; returns the labels.json path."""
    out = Path(out_dir)
    writers = writers_mod.parse_writers(",".join(writers))
    for i, s in enumerate(samples):
        frag = writers_mod.write_sample(out, s, i, writers, split)
        frag.update(writers=list(writers))
        labels_mod.write_fragment(out, s.name, frag)
    labels_mod.assemble(out, [s.name for s in samples], info or {})
    return out / labels_mod.LABELS_FILE
