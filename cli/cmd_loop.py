"""`sim2sg loop`: the Sim2SG loop (Algorithm 1) and its baselines, a thin wrapper over
`sim2sg.loop.run` (torch is imported inside the command so that `sim2sg --help` stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from sim2sg.cli.cmd_train import (
    COMPILE_HELP,
    DETERMINISTIC_HELP,
    GRL_BOUND_HELP,
    BACKBONE_HELP,
    MODEL_HELP,
    MODEL_SET_HELP,
    Backbone,
    Model,
    overrides,
    parse_size,
)
from sim2sg.cli.common import info, out_dir, seed_option, user_errors


def loop_cmd(
    env: str = typer.Option(..., "--env", help="Source environment (name or .toml): SDR and generated scenes come from it."),
    target: Path = typer.Option(..., "--target", help="Folder of unlabelled target images."),
    out: Path = typer.Option(..., "--out", help="Run folder: history.json, metrics.json, checkpoint.pt, graphs/, examples/."),
    align: str = typer.Option("all", "--align", help="Alignment (docs/cli.md, 'Alignment'): none (SDR), appearance, "
                              "label (the loop), label+appearance, all (label+appearance+prediction), ...; the "
                              "baselines gpa (GPA) and sapnet (SAPNet), --model frcnn only."),
    iterations: int = typer.Option(3, "--loop", "--iterations", min=0, help="Synthesis-analysis iterations after the SDR phase."),
    method: str = typer.Option("sim2sg", "--method", help="sim2sg, metasim (Meta-Sim: learns the SDR placements by "
                               "matching the network's features of rendered and target images), pseudo-label "
                               "(self-training) or oracle."),
    metasim_steps: int = typer.Option(40, "--metasim-steps", min=0, help="--method metasim: SPSA steps on the "
                                      "placements per iteration."),
    metasim_batch: int = typer.Option(32, "--metasim-batch", min=1, help="--method metasim: scenes rendered per SPSA "
                                      "evaluation (two a step)."),
    size: str = typer.Option("256x256", "--size", help="Rendered / training image size WxH."),
    sdr_scenes: int = typer.Option(1000, "--sdr-scenes", min=1, help="SDR scenes rendered for the first phase."),
    sdr_steps: int = typer.Option(2000, "--sdr-steps", min=0, help="Optimizer steps on SDR data."),
    iter_steps: int = typer.Option(1000, "--iter-steps", min=0, help="Optimizer steps per iteration."),
    score_thresh: str = typer.Option("0.5", "--score-thresh", help="Detections lifted to 3D: a score in [0, 1], or "
                                     "'auto': each iteration, the score at which the network's detections on "
                                     "held-out SDR scenes lift to as many objects as those scenes hold."),
    min_fit_iou: float = typer.Option(0.3, "--min-fit-iou", min=0.0, max=1.0,
                                      help="Drop detections whose box no object of the class projects onto "
                                      "(best box IoU below this; 0 keeps all)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Labelled target data scored after each phase."),
    target_camera: Optional[Path] = typer.Option(
        None, "--target-camera", help="The target images' camera: one calibration file for the folder, or a "
        "folder of <image stem>.json/.txt, each a sim2sg camera JSON (K or hfov_deg; position + look_at or "
        "mount height/pitch/roll), a KITTI calib (P2) or a COLMAP cameras.txt (docs/formats.md, 'Target "
        "camera'). The lift and the generated scenes use it, scaled to --size as the images are. "
        "Default: the environment's nominal camera."),
    target_graphs: Optional[Path] = typer.Option(None, "--target-graphs", help="Folder of the target's true scene graphs (*.json): the content gap, and the lift's placement error for graphs named as the target images (history.json 'placement')."),
    oracle_data: Optional[Path] = typer.Option(None, "--oracle-data", help="Labelled target training data (--method oracle)."),
    keep_usd: bool = typer.Option(False, "--keep-usd", help="Save every generated stage under OUT/usd/."),
    model: Model = typer.Option(Model.frcnn, "--model", help=MODEL_HELP),
    backbone: Backbone = typer.Option(Backbone.resnet18, "--backbone", help=BACKBONE_HELP),
    batch: int = typer.Option(16, "--batch", min=1),
    lr: float = typer.Option(1e-3, "--lr", min=0.0),
    grl_weight: float = typer.Option(0.1, "--grl-weight", min=0.0, help="GRL lambda (DANN ramp over the run)."),
    grl_bound: float = typer.Option(0.0, "--grl-bound", min=0.0, help=GRL_BOUND_HELP),
    augment: str = typer.Option("photometric", "--augment", help="Photometric augmentation of the labelled images: "
                                "photometric (colour, blur, noise; boxes unchanged) or none."),
    target_bn: bool = typer.Option(False, "--target-bn", help="Predict on target images with BatchNorm "
                                   "statistics re-estimated on the unlabelled target images (AdaBN)."),
    target_textures: bool = typer.Option(False, "--target-textures", help="Texture the generated "
                                         "scenes with crops of the target images (each object with the pixels "
                                         "in its predicted box, the ground with a rectified ground patch)."),
    keep_sdr: bool = typer.Option(False, "--keep-sdr", help="Every iteration trains on the generated "
                                  "scenes together with the SDR scenes."),
    align_sdr_scenes: bool = typer.Option(False, "--align-sdr-scenes", help="With --keep-sdr: the domain "
                                          "classifiers see the SDR scenes too (default: only the scenes generated "
                                          "from the target, whose content is aligned with it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    seed: int = seed_option(),
    no_amp: bool = typer.Option(False, "--no-amp", help="Disable bf16 autocast on CUDA."),
    deterministic: bool = typer.Option(False, "--deterministic", help=DETERMINISTIC_HELP),
    compile_: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    checkpoint_every: int = typer.Option(500, "--checkpoint-every", min=1,
                                         help="Optimizer steps between in-phase resume points (OUT/resume_step.pt)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT after a kill (same options; "
                                "bit-exact on the CPU): OUT/resume.pt after each phase, OUT/resume_step.pt inside one."),
    model_set: list[str] = typer.Option([], "--set", help=MODEL_SET_HELP),
) -> None:
    """Run the Sim2SG loop (Algorithm 1) against unlabelled --target images: SDR data, then per
    iteration predict on the target -> lift to 3D -> render in memory -> train; or a baseline
    (--method metasim | pseudo-label | oracle; --align gpa | sapnet)."""
    out_dir(out)
    with user_errors():
        from sim2sg.loop.config import LoopConfig, parse_threshold
        from sim2sg.loop.run import run
        from sim2sg.loop.state import check_new_run
        from sim2sg.train import distributed

        if not resume:
            check_new_run(out)
        w, h = parse_size(size)
        device = distributed.init_from_env(device)  # under torchrun: join the process group (docs/distributed.md)
        cfg = LoopConfig(env=env, target=str(target), out=str(out), method=method, align=align,
                         iterations=iterations, sdr_scenes=sdr_scenes, width=w, height=h, sdr_steps=sdr_steps,
                         iter_steps=iter_steps, batch_size=batch, lr=lr, arch=model.value, backbone=backbone.value,
                         grl_weight=grl_weight, grl_bound=grl_bound, score_threshold=parse_threshold(score_thresh),
                         min_fit_iou=min_fit_iou, augment=augment, target_bn=target_bn,
                         target_textures=target_textures, keep_sdr=keep_sdr, align_sdr_scenes=align_sdr_scenes,
                         eval_data=str(eval_data) if eval_data else None,
                         target_camera=str(target_camera) if target_camera else None,
                         target_graphs=str(target_graphs) if target_graphs else None,
                         oracle_data=str(oracle_data) if oracle_data else None, keep_usd=keep_usd,
                         device=device, amp=not no_amp, deterministic=deterministic, compile=compile_, seed=seed,
                         progress=progress, checkpoint_every=checkpoint_every, model=overrides(model_set),
                         metasim_steps=metasim_steps, metasim_batch=metasim_batch)
        try:
            run(cfg, log=info if distributed.is_main() else (lambda _: None), resume=resume)
        finally:
            distributed.shutdown()


def register(app: typer.Typer) -> None:
    app.command("loop")(loop_cmd)
