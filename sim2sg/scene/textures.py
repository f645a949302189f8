"""Procedural texture families: seamless (tileable) light-valued images tinted by material color.

Each family has `VARIANTS` deterministic variants; a texture is identified by (family, variant) and
generated from its own seed, so the same name always gives the same pixels. Values are near white so
that UsdUVTexture's `scale` (the object's color) sets the hue; "plain" is pure white.
"""

from __future__ import annotations

import zlib

import numpy as np

VARIANTS = 4
SIZE = 128


def _periodic_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """(n, n) float in [0, 1]: white noise low-passed by a Gaussian in the Fourier domain, so it
    wraps seamlessly; `sigma` in pixels."""
    white = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    x = np.real(np.fft.ifft2(np.fft.fft2(white) * g))
    x -= x.min()
    return x / max(x.max(), 1e-12)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    v, u = np.mgrid[0:n, 0:n] / n
    return u, v


def _plain(rng, n):
    return np.ones((n, n))


def _noise(rng, n):
    return 0.6 + 0.4 * _periodic_noise(rng, n, sigma=rng.uniform(2, 6))


def _checker(rng, n):
    k = int(rng.choice([2, 4, 8]))
    u, v = _grid(n)
    return np.where((np.floor(u * k) + np.floor(v * k)) % 2 == 0, 1.0, 0.55)


def _stripes(rng, n):
    k = int(rng.choice([3, 4, 6, 8]))
    u, _ = _grid(n)
    return 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * k * u))


def _tiles(rng, n):
    k = int(rng.choice([2, 4, 8]))
    u, v = _grid(n)
    fu, fv = (u * k) % 1.0, (v * k) % 1.0
    grout = (np.minimum(fu, 1 - fu) < 0.04) | (np.minimum(fv, 1 - fv) < 0.04)
    return np.where(grout, 0.45, 0.9 + 0.1 * _periodic_noise(rng, n, 3))


def _wood(rng, n):
    u, v = _grid(n)
    warp = _periodic_noise(rng, n, 8)
    k = int(rng.choice([6, 8, 12]))
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (k * v + 1.5 * warp))
    return 0.6 + 0.4 * rings ** 2


def _marble(rng, n):
    u, v = _grid(n)
    warp = _periodic_noise(rng, n, 5)
    return 0.65 + 0.35 * np.abs(np.sin(2 * np.pi * (2 * u + 2 * v) + 6 * warp))


def _asphalt(rng, n):
    fine = rng.random((n, n))
    return 0.55 + 0.25 * _periodic_noise(rng, n, 1.5) + 0.2 * (fine > 0.97)


def _grass(rng, n):
    return 0.5 + 0.3 * _periodic_noise(rng, n, 1.0) + 0.2 * _periodic_noise(rng, n, 6)


def _bricks(rng, n):
    rows = int(rng.choice([4, 8]))
    u, v = _grid(n)
    row = np.floor(v * rows)
    fu = (u * rows / 2 + 0.5 * (row % 2)) % 1.0
    fv = (v * rows) % 1.0
    mortar = (np.minimum(fu, 1 - fu) < 0.05) | (np.minimum(fv, 1 - fv) < 0.08)
    return np.where(mortar, 1.0, 0.6 + 0.15 * _periodic_noise(rng, n, 2))


def _fabric(rng, n):
    u, v = _grid(n)
    k = int(rng.choice([16, 32]))
    weave = 0.5 + 0.25 * (np.sin(2 * np.pi * k * u) + np.sin(2 * np.pi * k * v))
    return 0.7 + 0.3 * weave * (0.7 + 0.3 * _periodic_noise(rng, n, 4))


_GENERATORS = {
    "plain": _plain, "noise": _noise, "checker": _checker, "stripes": _stripes, "tiles": _tiles,
    "wood": _wood, "marble": _marble, "asphalt": _asphalt, "grass": _grass, "bricks": _bricks,
    "fabric": _fabric,
}
FAMILIES: tuple[str, ...] = tuple(_GENERATORS)


def texture_name(family: str, variant: int) -> str:
    """File stem of a texture: e.g. "wood_2"."""
    return f"{family}_{variant}"


def texture_image(family: str, variant: int, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) uint8 sRGB image of texture (family, variant); deterministic."""
    if family not in _GENERATORS:
        raise KeyError(f"unknown texture family {family!r}")
    seed = np.random.SeedSequence([zlib.crc32(family.encode()), int(variant)])
    rng = np.random.default_rng(seed)
    lum = np.clip(_GENERATORS[family](rng, size), 0.0, 1.0)
    # A faint per-channel variation keeps textures from being perfectly grey, deterministically.
    tint = 1.0 - 0.06 * rng.random(3)
    img = lum[..., None] * tint[None, None, :]
    return np.round(img * 255).astype(np.uint8)
