"""`LoopConfig`: one run of Algorithm 1 (`sim2sg loop`), its ablations and baselines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sim2sg.errors import InputError
from sim2sg.train.align import frcnn_only, model_mode, parse_align
from sim2sg.train.config import check_shared

METHODS = ("sim2sg", "metasim", "pseudo-label", "oracle")


@dataclass(frozen=True)
class LoopConfig:
    """One run of `sim2sg loop`. Sizes in pixels; steps are optimizer steps; scenes are rendered
    images. align: the alignment (`sim2sg.train.align`: none = SDR, appearance, label,
    label+appearance, all, ...; the baselines GPA and SAPNet are the alignments gpa and sapnet);
    method: sim2sg, metasim (Meta-Sim: `sim2sg.loop.metasim`), pseudo-label or oracle.

    env: source environment (name or .toml). target: folder of unlabelled target images.
    eval_data: labelled target dataset (labels.json) for metrics after each phase (optional).
    target_graphs: folder of the target's true scene graphs, to measure the content gap (optional).
    target_camera: the target images' camera (`sim2sg.scene.calib`: a calibration file for the
    folder, or a folder of one file per image); the lift and the generated scenes use it, its
    intrinsics scaled per axis to width x height as the images are (None: the environment's
    nominal camera).
    oracle_data: labelled target training dataset (method "oracle").
    target_bn: whenever the model predicts on target images (the synthesis step, pseudo labels,
    the target evaluation) its BatchNorm layers use statistics re-estimated on the first
    `target_bn_images` unlabelled target images (AdaBN, `sim2sg.train.adabn`); training is
    untouched. The evaluation then also records the metrics with the training statistics
    (phase "summary_source_bn"), so one run shows what the re-estimation alone changes.
    target_textures: the synthesis step textures each lifted object with the pixels inside its
    predicted box on its target image, and the ground (road) with a rectified patch of that
    image's ground (`sim2sg.loop.target_look`), instead of the source environment's random textures:
    the generated data then carries the target's appearance as well as its content.
    keep_sdr: each iteration trains on its generated scenes together with the SDR scenes (as the
    pseudo-label baseline keeps them), so that objects a weak model misses on the target - absent
    from the scenes generated from its predictions - stay in what the network learns from.
    align_sdr_scenes: with keep_sdr, the domain classifiers (sigma_a, sigma_c,pred) see the SDR
    scenes as source images too. Off (the default), they see only the scenes generated from the
    target: the paper aligns features only once the content is aligned (end of sec. 3; 5.3), and
    the SDR scenes' content is the very gap sigma_c,label closes; D^c would learn to tell them
    from the target by their class mix, and its reversed gradient would push the predictions on
    them away from their own labels. On reproduces tables run before 2026-11-25.
    sdr_checkpoint: every method but the oracle starts with the same SDR phase (same data, same
    steps, same seed); with this path the first run saves its end state (model, optimizer, step,
    RNG states) and later runs with the same settings start from it instead of retraining it.
    warmup_checkpoint: the loop rows (label, label+appearance, all) train identically until the
    GRLs switch on at iteration `align_from_iteration`: same SDR phase, same generated scenes,
    same steps. With this path the first such run saves its state at the end of iteration
    `align_from_iteration - 1` (trainer, loop generator, history, example images and generated
    graphs) and later runs with the same settings continue from it. Besides the time, this takes
    the warm-up's run-to-run spread on the GPU out of the comparison between those rows: they then
    differ only by what the aligned iterations do (and by those iterations' own spread: up to
    0.01 mAP on the H100 unless `deterministic`).
    deterministic: on CUDA, deterministic kernels (`train.steps.make_reproducible`; slower), so
    that a row trained again from the same state repeats; on the CPU they are always on.
    """

    env: str
    target: str
    out: str
    method: str = "sim2sg"
    align: str = "all"
    iterations: int = 3
    sdr_scenes: int = 1000
    scenes_per_image: int = 1
    width: int = 256
    height: int = 256
    sdr_steps: int = 2000
    iter_steps: int = 1000
    align_from_iteration: int = 2
    batch_size: int = 16
    lr: float = 1e-3
    lr_warmup_steps: int = 100
    arch: str = "frcnn"  # the network: frcnn (Faster R-CNN, the paper's) or fast (sim2sg.model.fast)
    backbone: str = "resnet18"
    grl_weight: float = 0.1
    grl_ramp: str = "dann"
    grl_bound: float = 0.0  # > 0: GRL gradient <= grl_bound x labelled gradient per tensor (train.steps.bounded_backward)
    score_threshold: float | str = 0.5  # lift gate; "auto": calibrated each iteration (sim2sg.loop.calibrate)
    min_fit_iou: float = 0.3  # lift gate: boxes no object of the class can project onto (sim2sg.loop.lift)
    target_bn: bool = False  # AdaBN: BatchNorm statistics of the target images whenever predicting there
    target_bn_images: int = 512
    target_textures: bool = False  # synthesis: textures cropped from the target images (sim2sg.loop.target_look)
    keep_sdr: bool = False  # iterations train on the generated scenes and the SDR scenes together
    align_sdr_scenes: bool = False  # with keep_sdr: the SDR scenes are source images of the domain losses too
    augment: str = "photometric"  # on every labelled batch of every method (sim2sg.train.augment)
    pseudo_threshold: float = 0.7
    eval_data: str | None = None
    target_camera: str | None = None  # calibration file or folder (sim2sg.scene.calib); None: the nominal camera
    target_graphs: str | None = None
    oracle_data: str | None = None
    keep_usd: bool = False
    sdr_checkpoint: str | None = None  # the SDR phase's end state: loaded when the file exists, else saved there
    warmup_checkpoint: str | None = None  # loop rows' state before the GRLs switch on: likewise
    render_batch: int = 256
    checkpoint_every: int = 500  # in-phase resume points (RUN/resume_step.pt), in optimizer steps
    # Meta-Sim (method "metasim", sim2sg.loop.metasim): per iteration, SPSA steps on the attribute
    # transform, scenes rendered per evaluation (two per step), Adam's learning rate, the SPSA
    # perturbation, and the target images whose features the MMD matches
    metasim_steps: int = 40
    metasim_batch: int = 32
    metasim_lr: float = 0.05
    metasim_delta: float = 0.1
    metasim_images: int = 256
    device: str = "auto"
    amp: bool = True
    deterministic: bool = False  # CUDA: deterministic kernels (train.steps.make_reproducible); CPU: always
    compile: bool = False  # torch.compile the fast network's dense pass (TrainConfig.compile); free on resume
    seed: int = 0
    progress: bool = True
    model: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InputError("--method", "method", f"expected one of {', '.join(METHODS)}, got {self.method!r}")
        terms = parse_align(self.align, loop=True)
        check_shared(self, _bad_option)
        frcnn_only(terms, self.arch, "--align")
        if self.method == "metasim" and "label" in terms:
            raise InputError("--align", "align", "Meta-Sim learns the SDR generator's placements instead of the "
                                                 "synthesis loop: its alignment cannot include 'label'")
        if self.target and self.out and Path(self.out).resolve() == Path(self.target).resolve():
            # the run's history, checkpoints and graphs would sit among the unlabelled images
            raise InputError("--out", "out", f"{self.out} is the target image folder (--target): name another folder")
        if self.method == "oracle" and not self.oracle_data:
            raise InputError("--oracle-data", "oracle_data", "the oracle needs a labelled target dataset")
        for name in ("iterations", "sdr_scenes", "scenes_per_image", "width", "height",
                     "target_bn_images", "checkpoint_every", "metasim_batch", "metasim_images"):
            if getattr(self, name) < (0 if name == "iterations" else 1):
                raise InputError(f"--{name.replace('_', '-')}", name, "out of range")
        if not (self.score_threshold == "auto" or isinstance(self.score_threshold, (int, float))
                and not isinstance(self.score_threshold, bool) and 0.0 <= self.score_threshold <= 1.0):
            raise InputError("--score-thresh", "score_threshold",
                             f"expected a score in [0, 1] or 'auto', got {self.score_threshold!r}")
        if self.metasim_steps < 0 or not self.metasim_lr > 0 or not self.metasim_delta > 0:
            raise InputError("--metasim", "metasim", "metasim_steps must be >= 0, metasim_lr and metasim_delta > 0")

    @property
    def loops(self) -> bool:
        """Whether the run does synthesis iterations (content alignment, sigma_c,label)."""
        return self.method == "sim2sg" and "label" in parse_align(self.align, loop=True)

    def model_align(self) -> str:
        """The network's alignment mode in the aligned phases (`train.align.model_mode`): the
        baselines pseudo-label and oracle never align."""
        return model_mode(parse_align(self.align, loop=True)) if self.method in ("sim2sg", "metasim") else "none"

    def total_steps(self) -> int:
        return self.sdr_steps + self.iterations * self.iter_steps


def parse_threshold(text: str) -> float | str:
    """`--score-thresh` as given: "auto" or a number (its range is checked by `LoopConfig.validate`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InputError("--score-thresh", "score_threshold",
                         f"expected a score in [0, 1] or 'auto', got {text!r}") from None


_OPTIONS = {"arch": "--model", "batch_size": "--batch", "model": "--set", "grl_ramp": "loop config"}


def _bad_option(name: str, message: str) -> None:
    """`check_shared`'s error for the loop: the source is the command-line option of the field."""
    top = name.split(".")[0]
    raise InputError(_OPTIONS.get(top, f"--{top.replace('_', '-')}"), name, message)
