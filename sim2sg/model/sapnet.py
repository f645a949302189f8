"""SAPNet: spatial attention pyramid domain discriminator (Li et al., "Spatial Attention Pyramid
Network for Unsupervised Domain Adaptation", ECCV 2020), a feature-alignment baseline of the
paper's Table 3.

One image-level domain classifier behind a gradient reversal layer, which looks at the feature
map through a pyramid of windows and lets the detector's own objectness say where to look:

1. embedding: three 3x3 conv + BatchNorm + ReLU + dropout layers on the feature map (B, C, h, w)
   -> (B, 256, h, w);
2. spatial pyramid: the embedding average-pooled with stride 1 over windows of size s for each s
   in `windows` (-1: the whole map; a window larger than the map is clipped to it);
3. spatial attention: the feature map concatenated with the RPN objectness logits (B, A, h, w)
   goes through three 3x3 convs (the shared "semantic" map), then per window size through 1x1
   convs to one logit per pooled cell; a softmax over the cells weighs the pooled features into
   one (B, 256) vector per window size;
4. scale attention: the sum of those vectors -> 1x1 conv 128 + ReLU -> per window size
   256 weights, softmax across the window sizes, weighted sum -> (B, 256) -> linear -> 2 logits.

The loss (`sap_domain_loss`) is the softmax focal loss (gamma = 3 at the last layer, cross
entropy at the shallow one) of the source images against domain 0 plus the target images against
1. Both the features and the objectness logits pass through the GRL. The authors' sim10k ->
cityscapes setting (synthetic to real, as here): two discriminators, a shallow one (windows 3, 9,
cross entropy) and one on the last backbone layer (windows 3, 9, 15, 21, global; focal, gamma 3),
loss weight 0.1 with GRL weight 1. Here the GRL weight is the run's (0.1 by default, as DA Faster
R-CNN) and the loss weight 1: the network receives the same gradient, and under Adam the
discriminator's loss scale hardly matters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sim2sg.model.grl import grad_reverse


class SpatialAttentionPyramid(nn.Module):
    """SAPNet's discriminator for a (B, in_channels, h, w) feature map with `num_anchors`
    objectness channels; `forward` -> (B, 2) domain logits. Every window size gets its own
    attention branch."""

    def __init__(self, in_channels: int, num_anchors: int, windows: tuple[int, ...] = (3, 9, 15, 21, -1),
                 width: int = 256):
        super().__init__()
        self.windows = tuple(windows)

        def conv_bn(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                    nn.Dropout()]

        self.embedding = nn.Sequential(*conv_bn(in_channels, in_channels), *conv_bn(in_channels, width),
                                       *conv_bn(width, width))
        self.semantic = nn.Sequential(nn.Conv2d(in_channels + num_anchors, in_channels, 3, padding=1),
                                      nn.ReLU(inplace=True), nn.Conv2d(in_channels, width, 3, padding=1),
                                      nn.ReLU(inplace=True), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.attention = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, 128, 1), nn.ReLU(inplace=True), nn.Conv2d(128, 128, 1),
                          nn.ReLU(inplace=True), nn.Conv2d(128, 1, 1))
            for _ in self.windows)
        # SAPNet normalises this 1 x 1 layer with BatchNorm; a domain's batch may be one image,
        # which BatchNorm cannot normalise at 1 x 1, so a bias takes its place
        self.fuse = nn.Sequential(nn.Conv2d(width, 128, 1), nn.ReLU(inplace=True))
        self.split = nn.Conv2d(128, len(self.windows) * width, 1, bias=False)
        self.predictor = nn.Linear(width, 2)
        self.width = width

    def forward(self, feature: Tensor, objectness: Tensor) -> Tensor:
        """feature (B, C, h, w), objectness (B, A, h', w') logits -> (B, 2) domain logits."""
        if objectness.shape[-2:] != feature.shape[-2:]:
            objectness = F.interpolate(objectness, size=feature.shape[-2:], mode="bilinear", align_corners=True)
        semantic = self.semantic(torch.cat([feature, objectness.to(feature.dtype)], 1))
        emb = self.embedding(feature)
        b, _, h, w = emb.shape
        pooled = []
        for k, branch in zip(self.windows, self.attention):
            x = emb if k == 1 else F.avg_pool2d(emb, (h, w) if k == -1 else (min(k, h), min(k, w)), stride=1)
            att = branch(F.interpolate(semantic, size=x.shape[-2:], mode="bilinear", align_corners=True))
            att = torch.softmax(att.flatten(1).float(), 1).view(b, 1, *x.shape[-2:]).to(x.dtype)
            pooled.append((x * att).sum((2, 3), keepdim=True))  # (B, width, 1, 1)
        scale = self.split(self.fuse(sum(pooled))).view(b, len(self.windows), self.width, 1, 1)
        scale = torch.softmax(scale.float(), 1).to(pooled[0].dtype)
        out = sum(p * scale[:, i] for i, p in enumerate(pooled)).flatten(1)
        return self.predictor(out)


def focal_loss(logits: Tensor, label: int, gamma: float) -> Tensor:
    """Mean softmax focal loss -(1 - p_y)^gamma log p_y of (B, 2) logits against class `label`
    (gamma = 0: cross entropy)."""
    logp = torch.log_softmax(logits.float(), 1)[:, label]
    return (-(1 - logp.exp()) ** gamma * logp).mean()


def sap_domain_loss(head: SpatialAttentionPyramid, feature: Tensor, objectness: Tensor, domain: int,
                    lambd: float, gamma: float) -> Tensor:
    """SAPNet's loss for one domain (0 source, 1 target): focal loss of D(GRL(feature),
    GRL(objectness)) against `domain`."""
    return focal_loss(head(grad_reverse(feature, lambd), grad_reverse(objectness, lambd)), domain, gamma)
