"""The one alignment vocabulary of `sim2sg train`, `sim2sg loop` and the experiments.

An alignment is a set of terms joined with "+":

- `appearance`: sigma_a, the image-level domain classifier D^a on the backbone features z
  (paper eq. 3), through a gradient-reversal layer;
- `prediction`: sigma_c,pred, the domain classifier D^c on the outputs h(z) (eq. 4), through a
  gradient-reversal layer;
- `label`: sigma_c,label, the synthesis loop itself (Algorithm 1): scenes generated from the
  network's predictions on the target. Only `sim2sg loop` can do this one.

`none` is the empty set (plain training; in the loop, the SDR baseline). Shorthands: `both` =
`appearance+prediction`, `all` = `label+appearance+prediction` (the full Sim2SG).
"""

from __future__ import annotations

from sim2sg.errors import InputError

TERMS = ("label", "appearance", "prediction")  # canonical order
SHORTHANDS = {"none": frozenset(), "both": frozenset({"appearance", "prediction"}),
              "all": frozenset(TERMS)}
LOOP_ONLY = frozenset({"label"})


def parse_align(text: str, *, loop: bool, source: str = "--align") -> frozenset[str]:
    """The terms of `text` ("none", "appearance", "label+appearance", "all", ...). `loop`: whether
    the caller runs the synthesis loop (else "label" is refused). Bad text is an `InputError`."""
    if not isinstance(text, str):
        raise InputError(source, "align", f"expected a string, got {type(text).__name__}")
    if text in SHORTHANDS:
        terms = SHORTHANDS[text]
    else:
        parts = [p.strip() for p in text.split("+")]
        unknown = [p for p in parts if p not in TERMS]
        if unknown or not parts or len(set(parts)) != len(parts):
            raise InputError(source, "align", f"{text!r}: expected none, both, all or terms from "
                                              f"{', '.join(TERMS)} joined with '+' (e.g. label+appearance)")
        terms = frozenset(parts)
    if not loop and terms & LOOP_ONLY:
        raise InputError(source, "align", f"{text!r}: 'label' (the synthesis loop) needs `sim2sg loop`; "
                                          "`sim2sg train` aligns with none, appearance, prediction or both")
    return terms


def model_mode(terms: frozenset[str]) -> str:
    """The network's gradient-reversal mode for these terms: "none", "appearance", "prediction"
    or "both" (`sim2sg.model.sgg.ALIGN_MODES`); "label" is not the network's business."""
    a, p = "appearance" in terms, "prediction" in terms
    return "both" if a and p else "appearance" if a else "prediction" if p else "none"


def canonical(terms: frozenset[str]) -> str:
    """The canonical spelling: "none", or the terms in `TERMS` order joined with "+"."""
    return "+".join(t for t in TERMS if t in terms) or "none"
