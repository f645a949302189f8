"""How the renderer's kernels run: eagerly, or compiled by `torch.compile` once per function
(`kernel`), with the functions dominated by gathers compiled as scalar CPU code (`gather_bound`).

Every module of `sim2sg.render` that has a hot per-pixel or per-triangle function (raster,
coverage, shade, labels, pipeline) calls it through `kernel(fn, compiled)`; the cache and the
fallback to eager code when compilation fails live here, once.
"""

from __future__ import annotations

import warnings

import torch

_COMPILED: dict = {}


def gather_bound(fn):
    """Mark `fn` as dominated by gathers (per-pixel or per-triangle table lookups): `kernel`
    compiles it without SIMD on the CPU (inductor option `cpp.simdlen` 1; no effect on CUDA).

    Inductor's vectorised CPU code gathers an indexed value lane by lane into a stack buffer and
    reloads it as a vector, so each gather costs a scalar load, a store and the reload; kernels made
    mostly of gathers ran 1.3-3x faster as plain scalar loops (clevr 256x256, batch 8, 2 threads,
    ms per call: `_resolve` 3.3 -> 1.8, `_pixel_instances` 2.2 -> 1.4, `_light_triangles` 1.1 ->
    0.6, `_span_stats` 0.5 -> 0.15). `_keys`, `_depth_keys`, `_row_spans` and `_run_ends` stay
    vectorised (slower as scalar code), `shade` and `finish` must (pow).
    Only kernels of exactly rounded operations (+, -, *, /, sqrt, comparisons, integer arithmetic,
    min / max; no floating-point sums across elements) are marked, so scalar and vector code give
    the same bits; `pow` (Sleef in vector code, libm in scalar code) would not."""
    fn.gather_bound = True
    return fn


def kernel(fn, compiled: bool):
    """`fn`, or its `torch.compile`d version (cached per function; shapes are dynamic; scalar CPU
    code for `gather_bound` functions).

    If compilation fails (no C++ compiler / Triton on the machine), warn once and run `fn` eagerly
    from then on; a genuine error in `fn` then surfaces from the eager call.
    """
    if not compiled:
        return fn
    k = _COMPILED.get(fn)
    if k is None:
        scalar = getattr(fn, "gather_bound", False)
        comp = torch.compile(fn, dynamic=True, options={"cpp.simdlen": 1} if scalar else None)

        def k(*args):
            if _COMPILED.get(fn) is fn:
                return fn(*args)
            try:
                return comp(*args)
            except Exception as e:  # any backend failure: fall back to eager
                msg = str(e).splitlines()[0] if str(e) else ""
                warnings.warn(f"torch.compile of {fn.__name__} failed ({type(e).__name__}: {msg}); running it eagerly")
                _COMPILED[fn] = fn
                return fn(*args)

        _COMPILED[fn] = k
    return k
