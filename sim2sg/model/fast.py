"""The fast scene-graph network (`--model fast`): a one-stage centre detector (CenterNet-style) on a
ResNet + FPN-lite encoder, and a relation head over every pair of objects, batched end to end.

    encoder phi:  ResNet body (from scratch) -> top-down FPN-lite -> levels p2..p5 (stride 4..32,
                  `fast_channels` wide); z = p2 (stride 4) feeds every head
    predictor h:  class heatmap (B, C, h, w) + box map (B, 4, h, w) = sub-cell offset (2) and log
                  size in cells (2) (`sim2sg.model.centers`); relation logits for ordered pairs of
                  objects, each object read off z at its centre cell (`sim2sg.model.pair_head`)
    D^a:          per-pixel domain logits on p2..p5 behind a GRL (as `SceneGraphRCNN` on its FPN)
    D^c:          class distributions at the top `dc_objects` heatmap peaks per image, and predicate
                  scores of the ordered pairs among the top `dc_rel_objects` of them, behind GRLs

Training reads ground-truth objects padded to `max_objects` per image (no proposals, no sampling,
no per-image loops, no host syncs): the step has the same shapes every time. Inference takes the
`detections_per_img` highest 3x3 local maxima of the heatmap (max pooling replaces NMS), scores
the pairs among the top `rel_top_objects`, and splits the batch into per-image dicts only at the
end. Same contract as `sgg.SceneGraphRCNN` (read its `forward` docstring): losses in training
mode, per-image {boxes, labels, scores, rel_pairs, rel_scores} in eval mode, the same domain
classifier names (`domain_image`, `domain_objects`, `domain_predicates`) and loss names
(`loss_domain_image`, `loss_domain_pred`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from sim2sg.model.centers import (
    center_targets,
    decode_boxes,
    focal_loss,
    gather_cells,
    pad_targets,
    peaks,
    regression_loss,
)
from sim2sg.model.config import ALIGN_MODES, BACKBONES, ModelConfig
from sim2sg.model.domain import (
    ImageDomainHead,
    PredictionDomainHead,
    image_domain_loss,
    prediction_domain_loss,
    running_stats_frozen,
)
from sim2sg.model.pair_head import (
    PairRelationHead,
    dense_relation_targets,
    pair_mask,
    relation_loss,
)
from sim2sg.model.relation_head import all_pairs, predicate_scores

_BODY_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                  "resnet50": (256, 512, 1024, 2048), "resnet101": (256, 512, 1024, 2048)}
# Bodies of the fast network only (Faster R-CNN takes torchvision's names): torchvision's BasicBlock
# in (blocks per stage, widths per stage). Half ResNet-18's widths and one block a stage cost ~1/8
# of its convolutions; a CPU step is mostly those convolutions (benchmarks/train.py --profile).
LIGHT_BODIES = {"resnet10-half": ((1, 1, 1, 1), (32, 64, 128, 256)),
                "resnet18-half": ((2, 2, 2, 2), (32, 64, 128, 256))}
FAST_BACKBONES = BACKBONES + tuple(LIGHT_BODIES)


def _basic_body(blocks: tuple[int, ...], widths: tuple[int, ...]) -> nn.Module:
    """A ResNet body of torchvision's `BasicBlock`s at other depths and widths: a 7x7 stride-2 stem
    and max pool, then stages of `blocks[i]` blocks, `widths[i]` channels, stride 1 then 2, 2, 2;
    attribute names and initialisation as torchvision's `ResNet` (`conv1`, `bn1`, `relu`,
    `maxpool`, `layer1`..`layer4`), so `ResNetFPNLite` reads it like theirs."""
    body = nn.Module()
    body.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    body.bn1 = nn.BatchNorm2d(widths[0])
    body.relu = nn.ReLU(inplace=True)
    body.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    cin = widths[0]
    for i, (n, w) in enumerate(zip(blocks, widths)):
        stride = 1 if i == 0 else 2
        down = None if stride == 1 and cin == w else nn.Sequential(conv1x1(cin, w, stride), nn.BatchNorm2d(w))
        setattr(body, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride, down),
                                                     *(BasicBlock(w, w) for _ in range(n - 1))))
        cin = w
    for m in body.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
    return body


class ResNetFPNLite(nn.Module):
    """ResNet body (torchvision's `name`, no weights, plain BatchNorm, `body.*` named as
    torchvision's ResNet so its state dicts load; or one of `LIGHT_BODIES`) + a top-down pathway: 1x1 laterals to `channels`, nearest
    upsampling and sums, one 3x3 conv + BN + ReLU on the finest level.

    (B, 3, H, W) normalised images -> {"p2": (B, ch, H/4, W/4), "p3": H/8, "p4": H/16, "p5": H/32}.
    """

    def __init__(self, name: str, channels: int):
        super().__init__()
        if name in LIGHT_BODIES:
            blocks, body_channels = LIGHT_BODIES[name]
            self.body = _basic_body(blocks, body_channels)
        else:
            self.body = getattr(torchvision.models, name)(weights=None)
            self.body.fc = nn.Identity()  # unused; keeps the torchvision names of everything else
            body_channels = _BODY_CHANNELS[name]
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in body_channels)
        self.smooth = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        cs = []
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4):
            x = layer(x)
            cs.append(x)
        p = self.lateral[3](cs[3])
        out = {"p5": p}
        for k, name in ((2, "p4"), (1, "p3"), (0, "p2")):
            p = self.lateral[k](cs[k]) + F.interpolate(p, size=cs[k].shape[-2:], mode="nearest")
            out[name] = p
        out["p2"] = self.smooth(out["p2"])
        return {k: out[k] for k in ("p2", "p3", "p4", "p5")}


def _head(channels: int, out: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, out, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


class SceneGraphCenterNet(nn.Module):
    """See the module docstring. Submodules: `backbone` (`ResNetFPNLite`), `heatmap`, `box`,
    `relation` (`PairRelationHead`), `domain_image` (D^a), `domain_objects`, `domain_predicates`
    (D^c). `channels_last` is set by the trainer on CUDA."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.backbone not in FAST_BACKBONES:
            raise ValueError(f"unknown backbone {cfg.backbone!r} (choose from {', '.join(FAST_BACKBONES)})")
        self.cfg = cfg
        ch = cfg.fast_channels
        self.backbone = ResNetFPNLite(cfg.backbone, ch)
        # CenterNet's prior: every cell starts at p = 0.1 of being an object centre
        self.heatmap = _head(ch, cfg.num_classes, bias=-2.19)
        self.box = _head(ch, 4)
        self.relation = PairRelationHead(ch, cfg.num_predicates, cfg.rel_hidden)
        self.domain_image = ImageDomainHead(ch, cfg.domain_hidden)
        self.domain_objects = PredictionDomainHead(cfg.num_classes + 1)
        self.domain_predicates = PredictionDomainHead(cfg.num_predicates + 1)
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False

    # ---- input and the dense pass -------------------------------------------------------------
    def _prepare(self, images: list[Tensor]) -> tuple[Tensor, Tensor | None]:
        """(B, 3, H, W) normalised batch and per-image (sx, sy) scale factors of the resize (None
        when all images share one size: they run at that size; else all go to `image_size`)."""
        shapes = {tuple(im.shape[-2:]) for im in images}
        scale = None
        if len(shapes) == 1:
            x = torch.stack(images)
        else:
            h, w = self.cfg.image_size
            x = torch.cat([F.interpolate(im[None], size=(h, w), mode="bilinear", align_corners=False) for im in images])
            scale = torch.tensor([[w / im.shape[-1], h / im.shape[-2]] for im in images], device=x.device)
        x = (x - self.image_mean) / self.image_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, scale

    def backbone_features(self, images: list[Tensor]) -> dict[str, Tensor]:
        """The encoder's levels {"p2".."p5"} for (3, H, W) images in [0, 1], prepared exactly as in
        `forward` (what AdaBN re-estimates BatchNorm statistics with)."""
        return self.backbone(self._prepare(images)[0])

    def _dense(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Normalised (B, 3, H, W) -> (levels, heatmap logits (B, C, h, w), box map (B, 4, h, w))."""
        feats = self.backbone(x)
        return feats, self.heatmap(feats["p2"]), self.box(feats["p2"])

    def compile_dense(self, backend: str = "inductor") -> None:
        """Replace the dense pass (`_dense`: encoder + heatmap and box heads, the bulk of a step's
        work) by its `torch.compile`d version, for every later call: training, the target pass,
        inference. Only an instance attribute changes, so parameters, buffers and state dict
        keys stay those of the eager network (checkpoints load either way). The rest of the
        step (targets, peak picking, the relation head over pairs, losses) stays eager: it is
        small, and inference splits the batch on the host.

        Graph breaks: none (tests/test_train_compile.py: `torch._dynamo.explain`). Graphs:
        one per mode the pass runs in (source pass; target pass, whose BatchNorms have momentum 0
        under `running_stats_frozen`; eval mode under no_grad). Shapes: torch.compile's default
        `dynamic=None` compiles the first shapes statically and, once a frame sees a second batch
        size (a target batch of another size, an evaluation batch, a dataset's last partial
        batch), one more graph with a symbolic batch dimension that serves every later size.
        `dynamic=False` would compile a graph per batch size, and a loop run's evaluations
        (each dataset ends on its own partial batch) would pass dynamo's recompile limit and
        silently fall back to eager. backend: "inductor" (needs a C++ compiler on the CPU);
        tests use the cheaper "aot_eager".

        Donated buffers are turned off for the whole process: AOT autograd frees a compiled
        backward's saved intermediates in place unless its first backward kept the graph, and
        `--grl-bound` (`train.steps.bounded_backward`) takes the labelled gradient with
        `retain_graph=True`; in a loop only from the first aligned iteration on, after plain
        steps compiled the backward (an H100 table run failed there)."""
        torch._functorch.config.donated_buffer = False
        self._dense = torch.compile(type(self)._dense.__get__(self), backend=backend)

    # ---- training -----------------------------------------------------------------------------
    def forward(self, images: list[Tensor], targets: list[dict] | None = None,
                target_images: list[Tensor] | None = None, align: str = "none", grl_lambda: float = 0.0):
        """As `SceneGraphRCNN.forward`. Training losses: loss_heatmap (focal), loss_box (L1 of
        offset and log size at the centres), loss_relation (multi-label BCE over all pairs of
        ground-truth objects), and when aligning loss_domain_image (D^a: mean of the source and
        target per-pixel BCEs over p2..p5) and/or loss_domain_pred (D^c: mean of four BCEs,
        {peak class distributions, pair predicate scores} x {source, target}). Target images go
        through the encoder in a pass of their own, normalised by their own batch statistics
        without moving the running ones; "domain_source": False keeps an image out of the domain
        losses."""
        if not self.training:
            return self._inference(images)
        if targets is None:
            raise ValueError("targets are required in training mode")
        if align not in ALIGN_MODES:
            raise ValueError(f"unknown align mode {align!r}")
        cfg = self.cfg
        x, scale = self._prepare(images)
        gt = pad_targets(targets, cfg.max_objects, cfg.max_relations, x.device)
        if scale is not None:
            gt["boxes"] = gt["boxes"] * scale.repeat(1, 2)[:, None, :]
        feats, heat, box = self._dense(x)
        image_size = tuple(x.shape[-2:])
        grid = tuple(heat.shape[-2:])
        stride = (image_size[0] / grid[0], image_size[1] / grid[1])
        tg = center_targets(gt["boxes"], gt["labels"], gt["valid"], cfg.num_classes, grid, stride, cfg.center_sigma)
        obj = gather_cells(feats["p2"], tg["index"])
        rel_logits = self.relation(obj, gt["boxes"], image_size)
        rel_tgt = dense_relation_targets(gt["relations"], cfg.max_objects, cfg.num_predicates)
        losses = {
            "loss_heatmap": focal_loss(heat, tg["heatmap"]),
            "loss_box": regression_loss(box[:, :2], box[:, 2:], tg, gt["valid"]),
            "loss_relation": relation_loss(rel_logits, rel_tgt, pair_mask(gt["valid"]), cfg.rel_bg_weight),
        }
        if target_images is None or len(target_images) == 0 or align == "none":
            return losses
        xt, _ = self._prepare(target_images)
        with running_stats_frozen(self.backbone):
            feats_t, heat_t, box_t = self._dense(xt)
        keep = [i for i, t in enumerate(targets) if t.get("domain_source", True)]
        if len(keep) < len(targets):
            rows = torch.tensor(keep, dtype=torch.long, device=x.device)
            feats, heat, box = {k: v[rows] for k, v in feats.items()}, heat[rows], box[rows]
        if align in ("appearance", "both"):
            losses["loss_domain_image"] = 0.5 * (
                (image_domain_loss(self.domain_image, feats, 0.0, grl_lambda) if keep else 0.0)
                + image_domain_loss(self.domain_image, feats_t, 1.0, grl_lambda))
        if align in ("prediction", "both"):
            obj_t, rel_t = self._output_distributions(feats_t["p2"], heat_t, box_t, tuple(xt.shape[-2:]))
            terms = [prediction_domain_loss(self.domain_objects, obj_t, 1.0, grl_lambda),
                     prediction_domain_loss(self.domain_predicates, rel_t, 1.0, grl_lambda)]
            if keep:
                obj_s, rel_s = self._output_distributions(feats["p2"], heat, box, image_size)
                terms += [prediction_domain_loss(self.domain_objects, obj_s, 0.0, grl_lambda),
                          prediction_domain_loss(self.domain_predicates, rel_s, 0.0, grl_lambda)]
            losses["loss_domain_pred"] = 0.25 * sum(terms)
        return losses

    def _output_distributions(self, z: Tensor, heat: Tensor, box: Tensor, image_size) -> tuple[Tensor, Tensor]:
        """h(z) for D^c. z (B, ch, h, w), heatmap logits (B, C, h, w), box map (B, 4, h, w).
        Returns class distributions (B * K, C + 1) = [prod_c (1 - p_c), p_1..p_C] at the K =
        `dc_objects` highest peaks per image, and predicate scores (B * k (k - 1), P + 1) of the
        ordered pairs among the k = `dc_rel_objects` highest of them. Which cells and boxes are
        picked carries no gradient; the class probabilities, the features read at the cells and
        the relation head do."""
        cfg = self.cfg
        prob = torch.sigmoid(heat.float())
        b, c, h, w = prob.shape
        _, _, cells = peaks(prob.detach(), cfg.dc_objects)
        cls = gather_cells(prob, cells)  # (B, K, C)
        obj = torch.cat([torch.prod(1 - cls, dim=-1, keepdim=True), cls], dim=-1).reshape(-1, c + 1)
        k = min(cfg.dc_rel_objects, cells.shape[1])
        if k < 2:
            return obj, obj.new_zeros(0, cfg.num_predicates + 1)
        top = cells[:, :k]
        stride = (image_size[0] / h, image_size[1] / w)
        boxes = decode_boxes(top, box[:, :2].detach(), box[:, 2:].detach(), (h, w), stride, image_size)
        logits = self.relation(gather_cells(z, top), boxes, image_size)
        pairs = all_pairs(k, z.device)
        rel = logits[:, pairs[:, 0], pairs[:, 1]].reshape(-1, cfg.num_predicates)
        return obj, predicate_scores(rel)

    # ---- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def _inference(self, images: list[Tensor]) -> list[dict]:
        cfg = self.cfg
        x, scale = self._prepare(images)
        feats, heat, box = self._dense(x)
        image_size = tuple(x.shape[-2:])
        b, _, h, w = heat.shape
        stride = (image_size[0] / h, image_size[1] / w)
        scores, cls, cells = peaks(torch.sigmoid(heat.float()), cfg.detections_per_img)
        net_boxes = decode_boxes(cells, box[:, :2], box[:, 2:], (h, w), stride, image_size)
        boxes = net_boxes if scale is None else net_boxes / scale.repeat(1, 2)[:, None, :]
        kr = min(cfg.rel_top_objects, cells.shape[1])
        n_keep = (scores >= cfg.box_score_thresh).sum(1)
        pairs = all_pairs(kr, x.device)
        if kr >= 2:
            # in the network's pixels, as in training
            logits = self.relation(gather_cells(feats["p2"], cells[:, :kr]), net_boxes[:, :kr], image_size)
            rel = predicate_scores(logits[:, pairs[:, 0], pairs[:, 1]].reshape(-1, cfg.num_predicates))
            rel = rel.reshape(b, len(pairs), -1)
            n_rel = n_keep.clamp(max=kr)[:, None]
            ok = (pairs[None, :, 0] < n_rel) & (pairs[None, :, 1] < n_rel)
            rank = scores[:, pairs[:, 0]] * scores[:, pairs[:, 1]] * rel[..., 1:].max(-1).values
            order = torch.argsort(torch.where(ok, rank, -1.0), dim=1, descending=True, stable=True)
        outs = []
        for i, nk in enumerate(n_keep.tolist()):  # the one host sync: the batch splits into images
            nr = min(nk, kr)
            m = min(nr * (nr - 1), cfg.rel_max_pairs_test)
            o = order[i, :m] if kr >= 2 else pairs[:0, 0]
            outs.append({"boxes": boxes[i, :nk].float(), "labels": cls[i, :nk] + 1, "scores": scores[i, :nk].float(),
                         "rel_pairs": pairs[o], "rel_scores": (rel[i, o] if kr >= 2
                                                               else boxes.new_zeros(0, cfg.num_predicates + 1)).float()})
        return outs
