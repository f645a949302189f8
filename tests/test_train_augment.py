"""Photometric augmentation: analytic colour matrices, blur and noise statistics, determinism, and
that training with it leaves the labels untouched."""

import dataclasses

import numpy as np
import pytest
import torch

from sim2sg.errors import InputError
from sim2sg.train.augment import (
    AugmentSpec,
    augment_batch,
    augment_images,
    colour_matrices,
    gaussian_blur,
)
from sim2sg.train.config import TrainConfig

OFF = AugmentSpec(brightness=0.0, contrast=0.0, saturation=0.0, hue_deg=0.0, grayscale_p=0.0, blur_p=0.0, noise_p=0.0)


def _images(b=3, h=24, w=20, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((b, 3, h, w)).astype(np.float32))


def test_all_changes_off_is_the_identity():
    x = _images()
    assert torch.allclose(augment_batch(x, OFF, 5), x, atol=1e-6)


def test_colour_matrices():
    ident = colour_matrices(np.array([1.0]), np.array([0.0]), np.array([False]))[0]
    assert np.allclose(ident, np.eye(3), atol=1e-12)
    gray = colour_matrices(np.array([1.0]), np.array([0.3]), np.array([True]))[0]
    rgb = np.array([0.9, 0.2, 0.4])
    out = gray @ rgb
    assert np.allclose(out, out[0]) and np.isclose(out[0], 0.299 * 0.9 + 0.587 * 0.2 + 0.114 * 0.4)
    # a hue rotation keeps luma and the chroma's length
    rot = colour_matrices(np.array([1.0]), np.array([1.1]), np.array([False]))[0]
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    a, b = yiq @ rgb, yiq @ (rot @ rgb)
    assert np.isclose(a[0], b[0]) and np.isclose(np.hypot(*a[1:]), np.hypot(*b[1:]))
    assert not np.allclose(a[1:], b[1:])


def test_brightness_and_contrast_are_exact_on_a_flat_image():
    x = torch.full((1, 3, 8, 8), 0.4)
    spec = dataclasses.replace(OFF, brightness=0.5)
    y = augment_batch(x, spec, 1)
    f = float(y[0, 0, 0, 0] / 0.4)
    assert 0.5 <= f <= 1.5 and torch.allclose(y, torch.full_like(y, 0.4 * f))
    # contrast blends with the mean: a flat image stays flat whatever the factor
    assert torch.allclose(augment_batch(x, dataclasses.replace(OFF, contrast=0.9), 2), x, atol=1e-6)


def test_blur_keeps_the_mean_and_spreads_an_impulse_by_sigma():
    x = torch.zeros(2, 3, 41, 41)
    x[:, :, 20, 20] = 1.0
    y = gaussian_blur(x, np.array([1.5, 0.0]))
    assert torch.allclose(y[1], x[1])  # sigma 0: unchanged
    assert abs(float(y[0, 0].sum()) - 1.0) < 1e-5
    r = torch.arange(41, dtype=torch.float32) - 20
    var_x = float((y[0, 0].sum(0) * r**2).sum())
    assert abs(var_x - 1.5**2) < 0.05


def test_noise_has_the_drawn_std_and_a_seed_repeats():
    x = torch.full((4, 3, 64, 64), 0.5)
    spec = dataclasses.replace(OFF, noise_p=1.0, noise_std=(0.05, 0.05))
    y = augment_batch(x, spec, (7, 3))
    assert abs(float((y - x).std()) - 0.05) < 0.003
    assert torch.equal(y, augment_batch(x, spec, (7, 3)))
    assert not torch.equal(y, augment_batch(x, spec, (7, 4)))


def test_default_spec_stays_in_range_and_lists_of_mixed_sizes_work():
    imgs = [torch.rand(3, 16, 16), torch.rand(3, 12, 20)]
    out = augment_images(imgs, "photometric", (0, 1))
    assert [o.shape for o in out] == [i.shape for i in imgs]
    assert all(float(o.min()) >= 0.0 and float(o.max()) <= 1.0 for o in out)
    assert augment_images(imgs, "none", (0, 1)) is imgs
    with pytest.raises(ValueError):
        augment_images(imgs, "geometric", (0, 1))


def test_train_config_rejects_unknown_augmentation():
    with pytest.raises(InputError, match="augment"):
        TrainConfig(source="s", out="o", augment="flip").validate()


def test_train_step_augments_images_but_not_labels(monkeypatch):
    from sim2sg.model import ModelConfig, build_model
    from sim2sg.train import steps as engine

    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=2, num_predicates=2, image_size=(32, 32)))
    imgs = [torch.rand(3, 32, 32) for _ in range(2)]
    tgts = [{"boxes": torch.tensor([[2.0, 3.0, 12.0, 14.0], [15.0, 5.0, 30.0, 20.0]]),
             "labels": torch.tensor([1, 2]), "relations": torch.tensor([[0, 1, 1]])} for _ in range(2)]
    seen = {}

    def spy(images, targets, *a, **kw):
        seen["images"], seen["targets"] = images, targets
        return {"loss_x": sum(im.sum() for im in images) * 0.0 + sum(p.sum() for p in model.parameters()) * 0.0}

    monkeypatch.setattr(model, "forward", spy)
    cfg = TrainConfig(source="s", out="o", augment="photometric", seed=4)
    engine.train_step(model, engine.make_optimizer(model, cfg), (list(imgs), tgts, None), cfg, 9, 10, torch.device("cpu"))
    assert not torch.equal(seen["images"][0], imgs[0])
    assert torch.equal(seen["images"][0], augment_images(imgs, "photometric", (4, 9))[0])
    assert torch.equal(seen["targets"][0]["boxes"], tgts[0]["boxes"])
