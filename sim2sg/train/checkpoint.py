"""The one checkpoint format and file name, for plain training, the loop and its shared phases.

A checkpoint is a plain dict written atomically with `torch.save` and read with
`weights_only=True` (a file cannot run code):

    format "sim2sg-checkpoint", version, model (state dict), optimizer (state dict), step
    (optimizer steps done), epoch, rng (`TorchRNG.state_dict()`), config (the run's config as a
    dict), model_config (`ModelConfig` as a dict), meta (categories, predicates, env, image_size,
    and what else the writer records), rng_ranks (written under torchrun: every rank's rng state),
    plus optional string entries (e.g. the loop's "key": the settings a shared SDR phase or
    warm-up was made with).

Every run folder holds its latest state as `RUN/checkpoint.pt` (`FILE_NAME`); `sim2sg eval
--checkpoint`, `sim2sg predict` and `--resume` read it. Version 1 files (sim2sg <= 0.1, whose
rng entry also held numpy and Python states) are read too.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import sys
from pathlib import Path

import torch

from sim2sg import atomic
from sim2sg.checks import need_file
from sim2sg.errors import InputError
from sim2sg.model import ModelConfig, build_model
from sim2sg.train import distributed

CHECKPOINT_FORMAT = "sim2sg-checkpoint"
CHECKPOINT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILE_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state, config, meta: dict, epoch: int = 0, **extra: str) -> None:
    """Write `state` (a `sim2sg.train.steps.TrainState`) atomically to `path` (a kill mid-write
    leaves the previous file). config: a dataclass or dict (the run's settings); extra: string
    entries stored beside the standard keys. Under torchrun every rank calls this (the ranks'
    generator states are gathered into "rng_ranks") and rank 0 alone writes."""
    rng_ranks = distributed.gather_rng(state.rng)
    if not distributed.is_main():
        return
    ckpt = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "step": int(state.step), "epoch": int(epoch), "rng": state.rng.state_dict(),
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "model_config": dataclasses.asdict(state.model.cfg), "meta": meta, **extra,
    }
    if rng_ranks is not None:
        ckpt["rng_ranks"] = rng_ranks
    buf = io.BytesIO()
    torch.save(_canonical(ckpt), buf)
    atomic.write_bytes(path, buf.getvalue())


def _canonical(x):
    """`x` with its containers rebuilt and every string interned: pickle shares (memoizes) objects by
    identity, so a resumed run, whose optimizer keys ("step", "exp_avg", ...) and config strings come
    from the loaded file rather than from literals, wrote the same values as other bytes than an
    unbroken run. Tensors are kept as they are (their storages are shared as in the model)."""
    if type(x) is str:
        return sys.intern(x)
    if isinstance(x, dict):
        out = {_canonical(k): _canonical(v) for k, v in x.items()}
        if isinstance(x, collections.OrderedDict):  # a state dict: keep its type and version metadata
            out = collections.OrderedDict(out)
            if hasattr(x, "_metadata"):
                out._metadata = _canonical(x._metadata)
        return out
    if type(x) in (list, tuple):
        return type(x)(_canonical(v) for v in x)
    return x


def restore(state, ckpt: dict) -> None:
    """Put a loaded checkpoint's model, optimizer, step and generators into `state` (under
    torchrun, this rank's generators when the checkpoint was written by as many processes).
    Alignment heads the checkpoint's network has and `state`'s lacks (GPA, SAPNet) are added
    first (`sim2sg.train.steps.add_align_heads`)."""
    heads = [h for h in (ckpt.get("model_config") or {}).get("align_heads", ()) if not hasattr(state.model, h)]
    if heads:
        from sim2sg.train.steps import (
            add_align_heads,  # steps builds on this module's neighbours
        )

        add_align_heads(state, heads)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    ranks = ckpt.get("rng_ranks")
    state.rng.load_state_dict(ranks[distributed.rank()] if ranks and len(ranks) == distributed.world() else ckpt["rng"])


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint dict read with `weights_only=True`; `InputError` if it is not one of ours."""
    path = Path(path)
    need_file(path, "checkpoint", "checkpoint.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not a usable checkpoint"
        raise InputError(path, "", f"not a readable sim2sg checkpoint ({type(e).__name__}; expected a file "
                                   "written by `sim2sg train`)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, "format", f"not a sim2sg checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if ckpt.get("version") not in READABLE_VERSIONS:
        raise InputError(path, "version", f"unsupported checkpoint version {ckpt.get('version')!r} "
                                          f"(this sim2sg reads {', '.join(map(str, READABLE_VERSIONS))})")
    for k in ("model", "model_config", "meta"):
        if k not in ckpt:
            raise InputError(path, k, "missing")
        if k != "model" and not isinstance(ckpt[k], dict):
            raise InputError(path, k, "expected a dict")
    for key, size in (("categories", "num_classes"), ("predicates", "num_predicates")):
        names, n = ckpt["meta"].get(key), ckpt["model_config"].get(size)
        if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names) or len(names) != n:
            raise InputError(path, f"meta.{key}", f"expected {n} names (model_config.{size}), got {names!r}"[:200])
    return ckpt


def model_from_checkpoint(ckpt: dict, device="cpu"):
    model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device)


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """What `load_weights` loaded: `count` tensors; `skipped` the names of the class and predicate
    heads left at their initialisation because the checkpoint names other classes or predicates
    (`note` says which), empty otherwise."""

    count: int
    skipped: tuple[str, ...] = ()
    note: str = ""


def vocabulary_tensors(cfg: ModelConfig) -> set[str]:
    """Names of the state-dict tensors whose shape follows the number of classes or predicates (the
    heads that name what they predict), found by building the network's shapes (on the meta device,
    no values, no random draws) with one class and one predicate more."""
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        base = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
        more = build_model(dataclasses.replace(cfg, num_classes=cfg.num_classes + 1,
                                               num_predicates=cfg.num_predicates + 1)).state_dict()
    return {k for k, v in more.items() if k in base and base[k] != v.shape}


def load_weights(model: torch.nn.Module, path: str | Path,
                 vocabulary: tuple[list[str], list[str]] | None = None) -> LoadedWeights:
    """Load user-supplied weights into `model`: a sim2sg checkpoint, a state dict of this model,
    or a torchvision ResNet state dict (goes into the backbone body of either network; `fc.*` is
    ignored). Tensors whose name and shape match are loaded, the rest keep their initialisation.
    vocabulary: the (categories, predicates) the model will learn; a sim2sg checkpoint of other
    names (another environment's three classes fit the shapes of clevr's) loads everything but the
    heads whose outputs are those names (`vocabulary_tensors`), which would otherwise teach class i
    what the checkpoint's class i was. Raises `InputError` when nothing matches."""
    path = Path(path)
    need_file(path, "weights file", "checkpoint.pt")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, "", f"not a readable weights file ({type(e).__name__})") from None
    skip, note = set(), ""
    theirs = sd.get("meta") if isinstance(sd, dict) else None
    if vocabulary is not None and isinstance(theirs, dict) and hasattr(model, "cfg"):
        ours = (list(vocabulary[0]), list(vocabulary[1]))
        were = (list(theirs.get("categories") or []), list(theirs.get("predicates") or []))
        if were != ours:
            skip = vocabulary_tensors(model.cfg)
            note = (f"the checkpoint's categories {were[0]} and predicates {were[1]} are not this data's "
                    f"{ours[0]} and {ours[1]}")
    if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
        sd = sd["model"]
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise InputError(path, "", "expected a state dict")
    own = model.state_dict()
    matched = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        for name in (k, f"detector.backbone.body.{k}", f"backbone.body.{k}", k.removeprefix("module.")):
            if name in own and own[name].shape == v.shape:
                matched[name] = v
                break
    skipped = tuple(sorted(k for k in matched if k in skip))
    for k in skipped:
        del matched[k]
    if not matched:
        raise InputError(path, "", "no tensor matches this model (names or shapes differ)")
    model.load_state_dict(matched, strict=False)
    return LoadedWeights(len(matched), skipped, note if skipped else "")
