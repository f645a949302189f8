"""The scene-graph network: encoder phi (ResNet-FPN) + predictor h (Faster R-CNN + relation head),
with Sim2SG's domain classifiers D^a and D^c behind gradient reversal layers.

`SceneGraphRCNN(images, targets)` in training mode returns a dict of scalar losses; in eval mode a
list of per-image dicts. Images are (3, H, W) float tensors in [0, 1]; boxes are [x1, y1, x2, y2]
pixels of the input image (no +1 convention); labels are 1-based category ids (0 = background);
predicate ids are 1-based (0 = background / no relation).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from sim2sg.model.config import ALIGN_MODES, BACKBONES, ModelConfig
from sim2sg.model.domain import (
    ImageDomainHead,
    PredictionDomainHead,
    image_domain_loss,
    prediction_domain_loss,
    running_stats_frozen,
)
from sim2sg.model.gpa import GPAHead, class_prototypes, prototype_losses
from sim2sg.model.relation_head import (
    RelationHead,
    all_pairs,
    predicate_scores,
    relation_targets,
    spatial_encoding,
    union_boxes,
)
from sim2sg.model.sapnet import SpatialAttentionPyramid, sap_domain_loss

# The feature-alignment baselines of the paper's Table 3, this network only: GPA (`gpa.py`) and
# SAPNet (`sapnet.py`). Each needs its head (`ModelConfig.align_heads`, `add_align_heads`).
BASELINE_MODES = ("gpa", "sapnet")
# SAPNet's two discriminators: (name, FPN level, window sizes, focal gamma). The authors' synthetic
# -> real setting puts a shallow one (windows 3, 9; cross entropy) and one on the last layer of
# the backbone (stride 16 for their ResNet C4; windows 3, 9, 15, 21, whole map; focal, gamma 3).
SAP_DISCRIMINATORS = (("shallow", "0", (3, 9), 0.0), ("deep", "2", (3, 9, 15, 21, -1), 3.0))


class SceneGraphRCNN(nn.Module):
    """Faster R-CNN (ResNet-FPN from scratch) + relation head + domain classifiers.

    Submodules: `detector` (torchvision FasterRCNN; its `transform`, `backbone`, `rpn`,
    `roi_heads` are called one by one), `relation` (`RelationHead`), `domain_image` (D^a),
    `domain_objects` and `domain_predicates` (D^c). The domain heads always exist (a few hundred
    kB), so every checkpoint has the same keys whatever `--align` was.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {cfg.backbone!r} (choose from {', '.join(BACKBONES)})")
        if cfg.arch != "frcnn":
            raise ValueError(f"SceneGraphRCNN is arch 'frcnn', not {cfg.arch!r} (use build_model)")
        self.cfg = cfg
        # From scratch: resnet_fpn_backbone defaults to FrozenBatchNorm2d and 3 trainable layers,
        # which would freeze random weights; plain BatchNorm and all 5 layers train.
        backbone = resnet_fpn_backbone(backbone_name=cfg.backbone, weights=None,
                                       norm_layer=nn.BatchNorm2d, trainable_layers=5)
        ch = backbone.out_channels
        anchors = AnchorGenerator(sizes=tuple((s,) for s in cfg.anchor_sizes),
                                  aspect_ratios=((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes))
        h, w = cfg.image_size
        self.detector = FasterRCNN(
            backbone, num_classes=None,
            min_size=min(h, w), max_size=max(h, w),
            image_mean=list(cfg.image_mean), image_std=list(cfg.image_std),
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
            rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
            box_head=TwoMLPHead(ch * 7 * 7, cfg.box_head_dim),
            box_predictor=FastRCNNPredictor(cfg.box_head_dim, cfg.num_classes + 1),
            box_score_thresh=cfg.box_score_thresh, box_nms_thresh=cfg.box_nms_thresh,
            box_detections_per_img=cfg.detections_per_img,
            box_batch_size_per_image=cfg.roi_batch_per_image,
        )
        self.relation = RelationHead(ch, 7, cfg.box_head_dim, cfg.num_predicates, cfg.rel_hidden, cfg.message_passing)
        self.domain_image = ImageDomainHead(ch, cfg.domain_hidden)
        self.domain_objects = PredictionDomainHead(cfg.num_classes + 1)
        self.domain_predicates = PredictionDomainHead(cfg.num_predicates + 1)
        self.channels_last = False  # set by the trainer on CUDA
        self.add_align_heads(cfg.align_heads)

    def add_align_heads(self, names) -> list[nn.Module]:
        """Build the alignment heads of `names` (BASELINE_MODES) that the network lacks, record them
        in `cfg.align_heads`, and return the new modules (their parameters draw from torch's default
        generator: call inside `TorchRNG.scope`)."""
        new = []
        for name in names:
            if name not in BASELINE_MODES:
                raise ValueError(f"unknown alignment head {name!r} (choose from {', '.join(BASELINE_MODES)})")
            if hasattr(self, name):
                continue
            ch = self.detector.backbone.out_channels
            if name == "gpa":
                head = GPAHead(ch * 7 * 7, self.cfg.box_head_dim)
            else:
                anchors = self.detector.rpn.head.cls_logits.out_channels
                head = nn.ModuleDict({key: SpatialAttentionPyramid(ch, anchors, windows)
                                      for key, _, windows, _ in SAP_DISCRIMINATORS})
            self.add_module(name, head)
            new.append(head)
        heads = tuple(h for h in BASELINE_MODES if hasattr(self, h))
        if heads != self.cfg.align_heads:
            self.cfg = dataclasses.replace(self.cfg, align_heads=heads)
        return new

    # ---- forward ---------------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                target_images: list[Tensor] | None = None, align: str = "none", grl_lambda: float = 0.0):
        """Training: `images` (source, B x (3, H, W) in [0, 1]) with `targets` (B dicts: "boxes"
        (N, 4) float, "labels" (N,) long, "relations" (R, 3) long rows (subject index, object
        index, predicate id)); optional unlabelled `target_images` for domain alignment `align`
        with GRL weight `grl_lambda`. Returns {loss name: scalar tensor}:
        loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg, loss_relation and,
        when aligning, loss_domain_image (D^a, eq. 3: mean of the source and target per-pixel
        BCEs over all FPN levels) and/or loss_domain_pred (D^c, eq. 4: mean of four per-node BCEs,
        {object distributions, predicate scores} x {source, target}). Source and target images go
        through the backbone in separate passes, each normalised by its own batch statistics; only
        the source pass updates BatchNorm's running statistics. A target dict with
        "domain_source": False trains the labelled losses only: the domain classifiers do not see
        that image (e.g. SDR scenes mixed into the loop's generated ones, whose content is not
        aligned with the target's). When no source image is left, the source halves of eq. 3 and
        4 are left out for that step.

        Eval: returns per image {"boxes" (D, 4), "labels" (D,), "scores" (D,), "rel_pairs" (M, 2)
        long indices into boxes (subject, object), "rel_scores" (M, P + 1) [background,
        predicates] (see `relation.predicate_scores`)}, pairs sorted by decreasing
        score_subj * score_obj * max predicate score. Boxes are in the input images' pixels.
        """
        if not self.training:
            return self._inference(images)
        if targets is None:
            raise ValueError("targets are required in training mode")
        if align not in ALIGN_MODES + BASELINE_MODES:
            raise ValueError(f"unknown align mode {align!r}")
        if align in BASELINE_MODES and not hasattr(self, align):
            raise ValueError(f"align {align!r} needs its head: ModelConfig.align_heads or add_align_heads")
        det = self.detector
        il_s, tg = det.transform(images, targets)
        use_da = target_images is not None and len(target_images) > 0 and align != "none"
        feats_s = self._backbone(il_s.tensors)
        with _proposal_scores(det.rpn, use_da and align == "gpa") as rpn_scores:
            proposals, rpn_losses = det.rpn(il_s, feats_s, tg)
        _, roi_losses = det.roi_heads(feats_s, proposals, il_s.image_sizes, tg)
        losses = {**rpn_losses, **roi_losses, "loss_relation": self._relation_loss(feats_s, tg, il_s.image_sizes)}
        if use_da:
            # After the labelled losses: the transform draws a random size in training mode, and
            # the samplers above must see the generator as align="none" leaves it.
            il_t, _ = det.transform(target_images)
            # A pass of its own: each domain is normalised by its own batch statistics, so the
            # labelled path (its losses and the running statistics) is that of align="none" and
            # only the GRL gradients differ. A joint pass normalised the source with mixed
            # statistics, so switching alignment on also shifted the features the labelled heads
            # learn from. The running statistics stay the source's (AdaBN is `--target-bn`).
            with running_stats_frozen(det.backbone):
                feats_t = self._backbone(il_t.tensors)
            # The source side of the domain losses: the images not marked domain_source=False.
            keep = [i for i, t in enumerate(targets) if t.get("domain_source", True)]
            src_feats, src_props, src_sizes = feats_s, proposals, il_s.image_sizes
            if len(keep) < len(targets):
                rows = torch.tensor(keep, dtype=torch.long, device=il_s.tensors.device)
                src_feats = {k: v[rows] for k, v in feats_s.items()}
                src_props = [proposals[i] for i in keep]
                src_sizes = [il_s.image_sizes[i] for i in keep]
            if align in ("appearance", "both"):
                losses["loss_domain_image"] = 0.5 * (
                    (image_domain_loss(self.domain_image, src_feats, 0.0, grl_lambda) if keep else 0.0)
                    + image_domain_loss(self.domain_image, feats_t, 1.0, grl_lambda))
            if align in ("prediction", "both"):
                # target images have no labels: RPN in eval mode (no sampling, no loss), autograd on
                with _eval_mode(det.rpn):
                    proposals_t, _ = det.rpn(il_t, feats_t)
                obj_s, rel_s = (self._output_distributions(src_feats, src_props, src_sizes) if keep
                                else (None, None))
                obj_t, rel_t = self._output_distributions(feats_t, proposals_t, il_t.image_sizes)
                losses["loss_domain_pred"] = 0.25 * (
                    (prediction_domain_loss(self.domain_objects, obj_s, 0.0, grl_lambda) if keep else 0.0)
                    + prediction_domain_loss(self.domain_objects, obj_t, 1.0, grl_lambda)
                    + (prediction_domain_loss(self.domain_predicates, rel_s, 0.0, grl_lambda) if keep else 0.0)
                    + prediction_domain_loss(self.domain_predicates, rel_t, 1.0, grl_lambda))
            if align == "gpa":
                scores_s = [rpn_scores[0][i] for i in keep]
                with _eval_mode(det.rpn), _proposal_scores(det.rpn, True) as seen:
                    proposals_t, _ = det.rpn(il_t, feats_t)
                losses.update(self._gpa_losses((src_feats, src_props, scores_s, src_sizes),
                                               (feats_t, proposals_t, seen[0], il_t.image_sizes)) if keep else {})
            if align == "sapnet":
                losses["loss_domain_sap"] = sum(
                    (sap_domain_loss(self.sapnet[key], src_feats[level], det.rpn.head([src_feats[level]])[0][0], 0,
                                     grl_lambda, gamma) if keep else 0.0)
                    + sap_domain_loss(self.sapnet[key], feats_t[level], det.rpn.head([feats_t[level]])[0][0], 1,
                                      grl_lambda, gamma)
                    for key, level, _, gamma in SAP_DISCRIMINATORS)
        return losses

    def _gpa_losses(self, source: tuple, target: tuple) -> dict[str, Tensor]:
        """GPA's losses (`gpa.py`) at the RPN level (pooled ROI features, [background, object]
        probabilities from the RPN's objectness) and the R-CNN level (box-head features, the box
        classifier's C + 1 probabilities), for (features, proposals, proposal scores, image sizes)
        of each domain; the top `gpa_rois` proposals per image. Returns loss_gpa_rpn and
        loss_gpa_rcnn, each intra + inter."""
        rh, n = self.detector.roi_heads, self.cfg.gpa_rois
        protos = []
        for feats, props, scores, sizes in (source, target):
            boxes = [p[:n].detach() for p in props]
            pooled = rh.box_roi_pool(feats, boxes, sizes)  # (N, C, 7, 7)
            box_feats = rh.box_head(pooled)
            logits, _ = rh.box_predictor(box_feats)
            obj = torch.cat([s[:n] for s in scores]).float()
            rpn_p = torch.stack([1.0 - obj, obj], 1)
            protos.append((class_prototypes(self.gpa.rpn(pooled.flatten(1)).float(), rpn_p, boxes),
                           class_prototypes(self.gpa.rcnn(box_feats).float(), torch.softmax(logits.float(), 1), boxes)))
        (rpn_s, rcnn_s), (rpn_t, rcnn_t) = protos
        return {"loss_gpa_rpn": sum(prototype_losses(rpn_s, rpn_t)),
                "loss_gpa_rcnn": sum(prototype_losses(rcnn_s, rcnn_t))}

    def backbone_features(self, images: list[Tensor]) -> dict[str, Tensor]:
        """The FPN levels for (3, H, W) images in [0, 1], transformed exactly as in `forward` and
        inference (what AdaBN re-estimates BatchNorm statistics with)."""
        il, _ = self.detector.transform(images)
        return self._backbone(il.tensors)

    def _backbone(self, x: Tensor) -> dict[str, Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.detector.backbone(x)

    # ---- relation parts --------------------------------------------------------------------
    def _relation_logits(self, feats, boxes: list[Tensor], pairs: list[Tensor], image_sizes,
                         obj_feats: Tensor | None = None) -> Tensor:
        """Logits (sum M_i, P) for per-image `pairs` (M_i, 2) indexing per-image `boxes` (N_i, 4)."""
        rh = self.detector.roi_heads
        if obj_feats is None:
            obj_feats = rh.box_head(rh.box_roi_pool(feats, boxes, image_sizes))
        offset, gpairs, unions, spatial = 0, [], [], []
        for b, p, size in zip(boxes, pairs, image_sizes):
            bs, bo = b[p[:, 0]], b[p[:, 1]]
            gpairs.append(p + offset)
            unions.append(union_boxes(bs, bo))
            spatial.append(spatial_encoding(bs, bo, size))
            offset += len(b)
        union_roi = rh.box_roi_pool(feats, unions, image_sizes)
        return self.relation(obj_feats, torch.cat(gpairs), union_roi, torch.cat(spatial))

    def _relation_loss(self, feats, targets: list[dict], image_sizes) -> Tensor:
        """Multi-label BCE on ground-truth boxes: one sigmoid per predicate, all-zero targets for
        pairs without a relation, those down-weighted by `rel_bg_weight`; mean over predicates,
        weighted mean over pairs. At most `rel_max_pairs_train` pairs per image, relation pairs
        first, then a random sample of the others, drawn (as torchvision's proposal samplers draw)
        from torch's default generator, which `sim2sg.train.rng.TorchRNG.scope` hands the run's state."""
        cfg = self.cfg
        # one entry per image, even without pairs: ROI pooling takes the batch index from the
        # position in the list
        boxes, pairs, tgts = [], [], []
        for t in targets:
            n = len(t["boxes"])
            p, y = relation_targets(n, t["relations"].long(), cfg.num_predicates)
            cap = cfg.rel_max_pairs_train
            if len(p) > cap:  # only then sample (boolean indexing syncs with the host on GPU)
                fg = y.sum(1) > 0
                fg_idx, bg_idx = fg.nonzero().squeeze(1), (~fg).nonzero().squeeze(1)
                if len(fg_idx) > cap:
                    fg_idx = fg_idx[torch.randperm(len(fg_idx), device=fg_idx.device)[:cap]]
                room = cap - len(fg_idx)
                if len(bg_idx) > room:
                    bg_idx = bg_idx[torch.randperm(len(bg_idx), device=bg_idx.device)[:room]]
                keep = torch.cat([fg_idx, bg_idx])
                p, y = p[keep], y[keep]
            boxes.append(t["boxes"])
            pairs.append(p)
            tgts.append(y)
        if sum(len(p) for p in pairs) == 0:
            return feats["0"].sum() * 0.0  # keeps the graph; no pairs in this batch
        logits = self._relation_logits(feats, boxes, pairs, image_sizes)
        y = torch.cat(tgts)
        per_pair = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").mean(1)
        w = torch.where(y.sum(1) > 0, 1.0, cfg.rel_bg_weight)
        return (per_pair * w).sum() / w.sum().clamp(min=1e-6)

    def _output_distributions(self, feats, proposals: list[Tensor], image_sizes) -> tuple[Tensor, Tensor]:
        """h(z) for D^c: class distributions (N, C + 1) of the top `dc_objects` proposals per
        image, and predicate scores (M, P + 1) of all ordered pairs among the `dc_rel_objects`
        proposals most likely to be objects (highest 1 - p_background). Gradients flow into the
        box head, the box classifier, the relation head and the backbone."""
        cfg, rh = self.cfg, self.detector.roi_heads
        props = [p[: cfg.dc_objects].detach() for p in proposals]
        box_feats = rh.box_head(rh.box_roi_pool(feats, props, image_sizes))
        logits, _ = rh.box_predictor(box_feats)
        obj_prob = torch.softmax(logits.float(), dim=1)
        sel_boxes, sel_pairs, sel_idx, start = [], [], [], 0
        for p in props:
            n = len(p)
            fgp = 1.0 - obj_prob[start:start + n, 0].detach()
            k = min(cfg.dc_rel_objects, n)
            top = torch.topk(fgp, k).indices if k else fgp.new_zeros(0, dtype=torch.long)
            sel_boxes.append(p[top])
            sel_pairs.append(all_pairs(k, p.device))
            sel_idx.append(top + start)
            start += n
        if sum(len(x) for x in sel_pairs) == 0:
            return obj_prob, obj_prob.new_zeros(0, cfg.num_predicates + 1)
        rel_logits = self._relation_logits(feats, sel_boxes, sel_pairs, image_sizes, obj_feats=box_feats[torch.cat(sel_idx)])
        return obj_prob, predicate_scores(rel_logits)

    # ---- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def _inference(self, images: list[Tensor]) -> list[dict]:
        det, cfg = self.detector, self.cfg
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        il, _ = det.transform(images)
        feats = self._backbone(il.tensors)
        proposals, _ = det.rpn(il, feats)
        dets, _ = det.roi_heads(feats, proposals, il.image_sizes)
        boxes, pairs = [], []
        for d in dets:
            k = min(cfg.rel_top_objects, len(d["boxes"]))  # detections come sorted by score
            boxes.append(d["boxes"][:k])
            pairs.append(all_pairs(k, d["boxes"].device))
        n_pairs = [len(p) for p in pairs]
        if sum(n_pairs):
            scores = predicate_scores(self._relation_logits(feats, boxes, pairs, il.image_sizes)).split(n_pairs)
        else:
            scores = [torch.zeros(0, cfg.num_predicates + 1, device=il.tensors.device) for _ in dets]
        for d, p, s in zip(dets, pairs, scores):
            if len(p):
                obj_s = d["scores"].float()
                rank = obj_s[p[:, 0]] * obj_s[p[:, 1]] * s[:, 1:].max(1).values
                order = torch.argsort(rank, descending=True, stable=True)[: cfg.rel_max_pairs_test]
                p, s = p[order], s[order]
            d["rel_pairs"] = p
            d["rel_scores"] = s.float()
            d["scores"] = d["scores"].float()
            d["boxes"] = d["boxes"].float()
        return det.transform.postprocess(dets, il.image_sizes, original_sizes)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.train(False)
    try:
        yield module
    finally:
        module.train(was)


@contextlib.contextmanager
def _proposal_scores(rpn, record: bool):
    """Context yielding a list that receives, per RPN call inside it, the proposals' objectness
    probabilities (per image (N_i,), aligned with the proposals it returns): torchvision's RPN
    computes them in `filter_proposals` but returns only the boxes. Nothing changes when `record`
    is False or for the computation itself."""
    seen: list[list[Tensor]] = []
    if not record:
        yield seen
        return
    inner = rpn.filter_proposals

    def recording(*args, **kwargs):
        boxes, scores = inner(*args, **kwargs)
        seen.append(scores)
        return boxes, scores

    rpn.filter_proposals = recording
    try:
        yield seen
    finally:
        del rpn.filter_proposals
