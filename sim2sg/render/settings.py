"""Render settings derived from an environment, in one place.

An environment file contributes two things to rendering: `[render] min_visible_pixels` (objects
with fewer visible pixels are dropped) and `[appearance.post]` (post-processing ranges).
`environment_settings` reads and checks them (errors name the environment file);
`render_options` turns them into the renderer's `RenderOptions` at an image size.
"""

from __future__ import annotations

from typing import Any

from sim2sg.errors import InputError
from sim2sg.render.pipeline import RenderOptions
from sim2sg.render.post import PostProcess


def environment_settings(env: Any) -> dict:
    """{"min_visible_pixels": int >= 0, "post": dict or None} of an environment, as written in it.

    env: a `sim2sg.scene.environment.Environment` (its `min_visible_pixels` and `raw` TOML dict), a
    plain TOML dict, or None (defaults: 1 pixel, no post-processing). An empty `[appearance.post]`
    counts as none. The post table is checked with `PostProcess.from_dict`, so a bad one is
    reported against the environment file.
    """
    raw = getattr(env, "raw", env) if env is not None else {}
    raw = raw if isinstance(raw, dict) else {}
    source = _source(env)
    mvp = getattr(env, "min_visible_pixels", None)
    if mvp is None:
        mvp = (raw.get("render") or {}).get("min_visible_pixels", 1)
    if isinstance(mvp, bool) or not isinstance(mvp, int) or mvp < 0:
        raise InputError(source, "render.min_visible_pixels", f"expected an integer >= 0, got {mvp!r}")
    post = (raw.get("appearance") or {}).get("post") or None
    if post is not None:
        if not isinstance(post, dict):
            raise InputError(source, "appearance.post", "expected a table")
        PostProcess.from_dict(post, source)
    return {"min_visible_pixels": mvp, "post": post}


def render_options(env: Any, width: int, height: int, *, seed: int = 0, ssaa: int = 1,
                   shadows: bool = True) -> RenderOptions:
    """`RenderOptions` for `width` x `height` images of environment `env` (see `environment_settings`).

    The environment's `min_visible_pixels` is given at its camera's nominal size (CLEVR's 200 px at
    480 x 320); at another size it scales with the image area (at least 1 pixel), so an object
    counts as visible at every size when it covers the same share of the image. The one rule, for
    `sim2sg render` and the in-memory synthesis alike. env None (a stage of no environment): 1
    pixel, no post-processing. seed: post-processing randomness. ssaa, shadows: see `RenderOptions`.
    """
    settings = environment_settings(env)
    mvp = settings["min_visible_pixels"]
    camera = getattr(env, "camera", None)
    if camera is not None:
        mvp = max(1, round(mvp * (width * height) / (camera.width * camera.height)))
    post = settings["post"]
    return RenderOptions(width=width, height=height, ssaa=ssaa, shadows=shadows, min_visible_pixels=mvp,
                         post=PostProcess.from_dict(post, _source(env)) if post else None, seed=seed)


def _source(env: Any) -> str:
    return str(getattr(env, "source", None) or getattr(env, "name", None) or "<environment>")
