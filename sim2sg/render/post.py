"""Appearance-shift post-processing (the environment file's `[appearance.post]` table).

Each field is a (lo, hi) range; every image draws its own value uniformly from it ((0, 0) or lo == hi:
fixed). Order: brightness, contrast, saturation, hue shift (colour jitter on sRGB values in [0, 1],
as torchvision's ColorJitter), Gaussian blur, additive Gaussian noise, JPEG round trip (host, cv2).
Randomness only through explicit generators: `image_rng(seed, name)` gives the per-image numpy
Generator, and the noise tensor comes from a torch Generator seeded from it, so an image's result
depends only on (seed, name, pixels, device).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import fields

import cv2
import numpy as np
import torch

# PostProcess is parsed with the environment (so a bad table is refused when the file loads)
from sim2sg.scene.schema import PostProcess, Range  # noqa: F401  (re-exported)


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The per-image generator, from (seed, image name) only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())]))


def _draw(rng: np.random.Generator, r: Range) -> float:
    lo, hi = r
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def apply_post(images: torch.Tensor, names, post: PostProcess, seed: int) -> torch.Tensor:
    """images (B, H, W, 3) float sRGB in [0, 1] on any device -> same shape, post-processed.

    names: the B image names (per-image randomness). JPEG needs a host round trip.
    """
    b, h, w, _ = images.shape
    dev = images.device
    params = []
    for name in names:
        rng = image_rng(seed, name)
        params.append([_draw(rng, getattr(post, f.name)) for f in fields(PostProcess)] + [int(rng.integers(2**62))])
    p = torch.tensor([q[:7] for q in params], dtype=torch.float32, device=dev)
    blur, noise, bright, contr, sat, hue, jpeg = p.unbind(1)
    x = images * bright[:, None, None, None]
    mean = _gray(x).mean((1, 2, 3), keepdim=True)
    x = (mean + (x - mean) * contr[:, None, None, None]).clamp(0, 1)
    g = _gray(x)
    x = (g + (x - g) * sat[:, None, None, None]).clamp(0, 1)
    if bool((hue != 0).any()):
        # rotate chroma in YIQ space by the hue angle
        yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
        a = hue * (math.pi / 180.0)
        c, s = torch.cos(a), torch.sin(a)
        rot = torch.zeros(b, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
        m = torch.linalg.inv(yiq) @ rot @ yiq
        x = torch.einsum("bij,bhwj->bhwi", m, x).clamp(0, 1)
    if bool((blur > 0).any()):
        rad = max(1, int(math.ceil(3 * float(blur.max()))))
        t = torch.arange(-rad, rad + 1, device=dev, dtype=torch.float32)
        sig = blur.clamp(min=1e-3)[:, None]
        k = torch.exp(-0.5 * (t[None] / sig) ** 2)
        k = torch.where(blur[:, None] > 0, k, (t[None] == 0).float())
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (B*3, K)
        y = x.permute(0, 3, 1, 2).reshape(1, b * 3, h, w)
        y = torch.nn.functional.pad(y, (rad, rad, 0, 0), mode="replicate")
        y = torch.nn.functional.conv2d(y, k[:, None, None, :], groups=b * 3)
        y = torch.nn.functional.pad(y, (0, 0, rad, rad), mode="replicate")
        y = torch.nn.functional.conv2d(y, k[:, None, :, None], groups=b * 3)
        x = y.reshape(b, 3, h, w).permute(0, 2, 3, 1)
    if bool((noise > 0).any()):
        eps = torch.empty_like(x)
        for i, q in enumerate(params):
            gen = torch.Generator(device=dev)
            gen.manual_seed(q[7])
            eps[i] = torch.randn((h, w, 3), generator=gen, device=dev)
        x = (x + eps * noise[:, None, None, None]).clamp(0, 1)
    if bool((jpeg > 0).any()):
        host = (x * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
        out = x.clone()
        for i, q in enumerate(jpeg.tolist()):
            if q > 0:
                ok, enc = cv2.imencode(".jpg", host[i][:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(round(q))])
                dec = cv2.imdecode(enc, cv2.IMREAD_COLOR)[:, :, ::-1]
                out[i] = torch.from_numpy(np.ascontiguousarray(dec)).to(dev).float() / 255.0
        x = out
    return x
