"""The one alignment vocabulary of `sim2sg train`, `sim2sg loop` and the experiments.

An alignment is a set of terms joined with "+":

- `appearance`: sigma_a, the image-level domain classifier D^a on the backbone features z
  (paper eq. 3), through a gradient-reversal layer;
- `prediction`: sigma_c,pred, the domain classifier D^c on the outputs h(z) (eq. 4), through a
  gradient-reversal layer;
- `label`: sigma_c,label, the synthesis loop itself (Algorithm 1): scenes generated from the
  network's predictions on the target. Only `sim2sg loop` can do this one.
- `gpa`, `sapnet`: the feature-alignment baselines of the paper's Table 3 on Faster R-CNN
  (`--model frcnn`): GPA's graph-induced prototype alignment (`sim2sg.model.gpa`) and SAPNet's
  spatial-attention-pyramid domain classifier behind a GRL (`sim2sg.model.sapnet`). Each replaces
  sigma_a and sigma_c,pred, so it joins no term but `label`.

`none` is the empty set (plain training; in the loop, the SDR baseline). Shorthands: `both` =
`appearance+prediction`, `all` = `label+appearance+prediction` (the full Sim2SG).
"""

from __future__ import annotations

from sim2sg.errors import InputError

TERMS = ("label", "appearance", "prediction", "gpa", "sapnet")  # canonical order
BASELINES = frozenset({"gpa", "sapnet"})  # network alignments of their own (sim2sg.model.sgg.BASELINE_MODES)
SHORTHANDS = {"none": frozenset(), "both": frozenset({"appearance", "prediction"}),
              "all": frozenset({"label", "appearance", "prediction"})}
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
        if terms & BASELINES and len(terms - LOOP_ONLY) > 1:
            raise InputError(source, "align", f"{text!r}: gpa and sapnet are alignments of their own; each joins "
                                              "only 'label' (e.g. gpa, label+sapnet)")
    if not loop and terms & LOOP_ONLY:
        raise InputError(source, "align", f"{text!r}: 'label' (the synthesis loop) needs `sim2sg loop`; "
                                          "`sim2sg train` aligns with none, appearance, prediction or both")
    return terms


def model_mode(terms: frozenset[str]) -> str:
    """The network's alignment mode for these terms: "none", "appearance", "prediction", "both"
    (`sim2sg.model.config.ALIGN_MODES`), "gpa" or "sapnet"; "label" is not the network's business."""
    for b in sorted(terms & BASELINES):
        return b
    a, p = "appearance" in terms, "prediction" in terms
    return "both" if a and p else "appearance" if a else "prediction" if p else "none"


def network_heads(terms: frozenset[str]) -> tuple[str, ...]:
    """The alignment heads these terms need beyond D^a and D^c ("gpa", "sapnet"), for
    `sim2sg.train.steps.add_align_heads`; they exist for Faster R-CNN only (`frcnn_only`)."""
    return tuple(sorted(terms & BASELINES))


def frcnn_only(terms: frozenset[str], arch: str, source: str) -> None:
    """`InputError` when the terms need Faster R-CNN (GPA and SAPNet read its proposals and RPN
    objectness) and `arch` is another network."""
    if terms & BASELINES and arch != "frcnn":
        raise InputError(source, "align", f"{'+'.join(sorted(terms & BASELINES))} aligns Faster R-CNN's proposals and "
                                          f"RPN: it needs --model frcnn, not {arch!r}")


def canonical(terms: frozenset[str]) -> str:
    """The canonical spelling: "none", or the terms in `TERMS` order joined with "+"."""
    return "+".join(t for t in TERMS if t in terms) or "none"
