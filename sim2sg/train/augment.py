"""Photometric augmentation of labelled training images, on the training device.

Only pixel values change (no flips, crops or scaling), so boxes, masks and relations stay exact:
"left of" is still left of. The transforms widen the looks a detector trained from scratch on
synthetic images has seen - colour, contrast, blur and sensor noise - which is the cheap half of
the appearance gap; sigma_a (the image-level domain classifier) is the learned half.

Randomness is explicit: `augment_batch(images, spec, seed)` draws every parameter from generators
seeded by `seed` (the trainer passes (run seed, optimizer step)), so a batch is augmented the same
way on every run and after a resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("none", "photometric")


@dataclass(frozen=True)
class AugmentSpec:
    """Per-image random photometric changes, applied in this order to RGB in [0, 1]:

    brightness: multiply by U(1 - b, 1 + b); contrast: blend with the image mean, factor
    U(1 - c, 1 + c); saturation: blend with the luma image, factor U(1 - s, 1 + s); hue_deg: rotate
    the chroma (YIQ) plane by U(-h, h) degrees; grayscale_p: probability of dropping all colour;
    blur_p / blur_sigma: probability and U(lo, hi) sigma (pixels) of a Gaussian blur; noise_p /
    noise_std: probability and U(lo, hi) standard deviation of additive Gaussian noise.
    """

    brightness: float = 0.35
    contrast: float = 0.35
    saturation: float = 0.6
    hue_deg: float = 25.0
    grayscale_p: float = 0.1
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_p: float = 0.5
    noise_std: tuple[float, float] = (0.0, 0.04)


PHOTOMETRIC = AugmentSpec()

# RGB -> YIQ (NTSC); hue rotation is a rotation of the (I, Q) plane, so the whole colour step is one
# 3x3 matrix per image.
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def colour_matrices(sat: np.ndarray, hue_rad: np.ndarray, gray: np.ndarray) -> np.ndarray:
    """(B, 3, 3) float64 matrices M with rgb_out = M @ rgb_in: saturation scales the chroma (I, Q),
    hue rotates it, grayscale zeroes it (luma Y is kept)."""
    b = len(sat)
    k = np.where(gray, 0.0, sat)
    c, s = np.cos(hue_rad), np.sin(hue_rad)
    chroma = np.zeros((b, 3, 3))
    chroma[:, 0, 0] = 1.0
    chroma[:, 1, 1], chroma[:, 1, 2] = k * c, -k * s
    chroma[:, 2, 1], chroma[:, 2, 2] = k * s, k * c
    return _YIQ2RGB[None] @ chroma @ _RGB2YIQ[None]


def augment_batch(images: Tensor, spec: AugmentSpec, seed: int | tuple[int, ...]) -> Tensor:
    """Augmented copy of `images` (B, 3, H, W) float in [0, 1] (any device), clamped to [0, 1].

    Parameters come from `numpy.random.default_rng(seed)` (host) and the noise from a torch
    generator on the images' device seeded from the same sequence.
    """
    b = images.shape[0]
    if b == 0:
        return images
    rng = np.random.default_rng(seed)
    bright = rng.uniform(1 - spec.brightness, 1 + spec.brightness, b)
    contrast = rng.uniform(1 - spec.contrast, 1 + spec.contrast, b)
    sat = rng.uniform(1 - spec.saturation, 1 + spec.saturation, b)
    hue = np.deg2rad(rng.uniform(-spec.hue_deg, spec.hue_deg, b))
    gray = rng.random(b) < spec.grayscale_p
    blur = np.where(rng.random(b) < spec.blur_p, rng.uniform(*spec.blur_sigma, b), 0.0)
    noise = np.where(rng.random(b) < spec.noise_p, rng.uniform(*spec.noise_std, b), 0.0)
    noise_seed = int(rng.integers(0, 2**62))

    dev, dt = images.device, images.dtype
    x = images.float()
    mat = torch.as_tensor(colour_matrices(sat, hue, gray), dtype=torch.float32, device=dev)
    x = torch.einsum("bij,bjhw->bihw", mat, x)
    x = x * torch.as_tensor(bright, dtype=torch.float32, device=dev)[:, None, None, None]
    cf = torch.as_tensor(contrast, dtype=torch.float32, device=dev)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (mean + cf * (x - mean)).clamp(0.0, 1.0)
    if (blur > 0).any():
        x = gaussian_blur(x, blur)
    if (noise > 0).any():
        g = torch.Generator(device=dev).manual_seed(noise_seed)
        std = torch.as_tensor(noise, dtype=torch.float32, device=dev)[:, None, None, None]
        x = x + std * torch.randn(x.shape, generator=g, device=dev)
    return x.clamp(0.0, 1.0).to(dt)


def gaussian_blur(x: Tensor, sigma: np.ndarray) -> Tensor:
    """(B, C, H, W) blurred with a per-image Gaussian of std `sigma` (B,) pixels (0 = unchanged),
    separable, reflect padding; one grouped convolution per axis for the whole batch."""
    b, c, h, w = x.shape
    radius = max(1, int(math.ceil(3.0 * float(np.max(sigma)))))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.zeros((b, len(t)))
    for i, s in enumerate(sigma):
        if s > 0:
            k[i] = np.exp(-0.5 * (t / s) ** 2)
        else:
            k[i, radius] = 1.0
    k /= k.sum(1, keepdims=True)
    kt = torch.as_tensor(np.repeat(k, c, axis=0), dtype=x.dtype, device=x.device)  # (B*C, K)
    y = x.reshape(1, b * c, h, w)
    pad = min(radius, h - 1, w - 1)
    if pad < radius:  # images smaller than the kernel: zero-pad the rest (rare, tiny images)
        y = F.pad(F.pad(y, (pad, pad, pad, pad), mode="reflect"), (radius - pad,) * 4)
    else:
        y = F.pad(y, (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kt[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kt[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def augment_images(images: list[Tensor], mode: str, seed: tuple[int, ...]) -> list[Tensor]:
    """`augment_batch` on a list of (3, H, W) images (the detector's input format); images of one
    size are augmented as one batch. mode "none" returns the list unchanged."""
    if mode == "none" or not images:
        return images
    if mode != "photometric":
        raise ValueError(f"unknown augmentation {mode!r} (expected one of {', '.join(MODES)})")
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) == 1:
        return list(augment_batch(torch.stack(images), PHOTOMETRIC, seed).unbind(0))
    return [augment_batch(im[None], PHOTOMETRIC, (*seed, k))[0] for k, im in enumerate(images)]
