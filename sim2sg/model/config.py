"""`ModelConfig`: the architecture and head sizes of both scene-graph networks (`frcnn`,
`sim2sg.model.sgg`; `fast`, `sim2sg.model.fast`), stored in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
ALIGN_MODES = ("none", "appearance", "prediction", "both")
# Integer settings that may be 0: no message-passing round; no predicate pairs for D^c (objects
# only). Every other integer setting is a width or a count >= 1: at 0 torch refuses a layer, a
# loss goes NaN, or a head silently learns or predicts nothing.
ZERO_OK = frozenset({"message_passing", "dc_rel_objects"})
# Upper bounds of the integer settings: a guard, far above any scene sim2sg renders, against a
# typo that would allocate for minutes before failing. Objects per image enter the relation heads
# as pairs (N^2: 512 objects are 262,144 pairs per image); the rest are widths and counts.
INT_MAX = {"max_objects": 512, "rel_top_objects": 512, "dc_objects": 512, "dc_rel_objects": 512,
           "detections_per_img": 1024, "max_relations": 262_144, "rel_max_pairs_train": 262_144,
           "rel_max_pairs_test": 262_144, "message_passing": 16}
INT_MAX_OTHER = 65_536


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and head sizes. Defaults are sized for scenes of at most a few dozen objects
    (torchvision's COCO defaults - 2,000 proposals, 512 ROIs, a 1,024-wide head - cost most of the
    time and buy nothing here).

    num_classes / num_predicates: foreground categories / predicates (background excluded).
    image_size: (H, W) pixels the detector works at; the transform resizes nothing at that size.
    """

    num_classes: int
    num_predicates: int
    image_size: tuple[int, int]
    arch: str = "frcnn"  # "frcnn" (this module) or "fast" (`sim2sg.model.fast`); see `build_model`
    backbone: str = "resnet18"
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)  # one per FPN level; small objects
    rpn_pre_nms_train: int = 1000
    rpn_post_nms_train: int = 200
    rpn_pre_nms_test: int = 500
    rpn_post_nms_test: int = 100
    roi_batch_per_image: int = 64
    box_head_dim: int = 256
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 50
    rel_hidden: int = 256
    message_passing: int = 1
    rel_max_pairs_train: int = 256  # per image; foreground pairs first
    rel_bg_weight: float = 0.5  # weight of a no-relation pair in the predicate BCE
    rel_top_objects: int = 20  # inference: pairs among the top detections only
    rel_max_pairs_test: int = 200  # inference: best pairs kept per image
    dc_objects: int = 32  # D^c: top RPN proposals per image whose class distributions are aligned
    dc_rel_objects: int = 6  # D^c: pairs among this many most object-like of those
    domain_hidden: int = 256
    # alignment heads beyond D^a and D^c, built only when listed ("gpa", "sapnet"), so that
    # checkpoints of networks without them keep their keys; the trainer adds them when a run
    # starts aligning with them (`sim2sg.train.steps.add_align_heads`)
    align_heads: tuple[str, ...] = ()
    gpa_rois: int = 64  # GPA: top proposals per image in each domain's prototype graphs
    # fast network only (sim2sg.model.fast): FPN-lite / head width, ground truth padded to
    # max_objects objects and max_relations relations per image (more are dropped), heatmap
    # Gaussian width as a fraction of the box size (TTFNet's alpha)
    fast_channels: int = 64  # CenterNet-ResNet18 reads 64 channels at stride 4 too
    max_objects: int = 32
    max_relations: int = 2048
    center_sigma: float = 0.54
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @staticmethod
    def from_dict(d: dict) -> ModelConfig:
        d = dict(d)
        for k in ("image_size", "anchor_sizes", "image_mean", "image_std", "align_heads"):
            if k in d:
                d[k] = tuple(d[k])
        return ModelConfig(**d)
