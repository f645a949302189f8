"""Scene-graph triplet recall (neural-motifs / Scene-Graph-Benchmark definitions, FACTS.md).

- A predicted triplet is ``(subject object, predicate, object object)`` with score
  ``score(subject) * score(object) * score(predicate)``. Background (predicate 0) never forms a
  triplet.
- **Graph constraint**: each predicted pair yields one triplet, its predicate the argmax over the
  foreground predicates (ties go to the lowest predicate id). **No graph constraint**: every
  (pair, foreground predicate) is a triplet.
- Triplets are sorted by score, highest first; ties keep input order (pair order, then predicate
  id), so results are deterministic.
- A predicted triplet matches a GT triplet when subject class, object class and predicate are
  equal and both boxes have IoU >= 0.5 with the GT boxes. IoU is computed with continuous
  coordinates, **no +1** (`sim2sg.eval.boxes.box_iou`; the reference evaluators use +1).
  One predicted triplet may match several (identical) GT triplets; a GT triplet counts once.
- Per image, Recall@K = |GT triplets matched by the top K| / |GT triplets|. Images without GT
  relations are skipped; R@K is the mean over the remaining images (not pooled over triplets).
- Mean recall mR@K: per predicate, the per-image recall over that predicate's GT triplets,
  averaged over the images that contain the predicate; then averaged over the predicates that
  occur in the GT. (Scene-Graph-Benchmark also averages in predicates that never occur, as 0;
  we leave them out, as they carry no information.)
- Zero-shot recall zR@K (Lu et al. 2016; Tang et al. 2020): recall over the GT triplets whose
  (subject class, predicate, object class) never occurs in the training set, per image over the
  images that have such triplets, then averaged over those images. Needs the training triplets.
- The *ceiling* of a metric is its value for `perfect_prediction`: every GT box with its class and
  score 1, every GT pair with score 1 on each of its true predicates and 0 elsewhere. Under graph
  constraint a pair with several true predicates counts only one of them (the lowest id), and at
  most K triplets count, so R@K can be well below 1 (CLEVR: 6 objects, 30 pairs, 60 triplets give
  a graph-constrained R@20 ceiling of 1/3).
"""

from __future__ import annotations

import numpy as np

from sim2sg.eval.boxes import box_iou
from sim2sg.eval.groundtruth import ImageGT
from sim2sg.eval.predictions import AlignedPrediction

DEFAULT_KS = (20, 50, 100)


def ranked_triplets(pred: AlignedPrediction, *, graph_constraint: bool, max_k: int):
    """The top `max_k` predicted triplets of one image, best first.

    Returns ``(subj, obj, col, score)``: (T,) int64 object indices, (T,) int64 foreground
    predicate columns (see `AlignedPrediction.rel_scores`), (T,) float64 triplet scores.
    """
    p, f = pred.rel_scores.shape
    if p == 0 or f == 0:
        z = np.zeros(0, np.int64)
        return z, z, z, np.zeros(0)
    if graph_constraint:
        col = np.argmax(pred.rel_scores, axis=1)  # first maximum: lowest predicate id on ties
        pair = np.arange(p)
    else:
        pair = np.repeat(np.arange(p), f)  # pair-major, then predicate id: the tie order
        col = np.tile(np.arange(f), p)
    subj, obj = pred.pairs[pair, 0], pred.pairs[pair, 1]
    score = pred.scores[subj] * pred.scores[obj] * pred.rel_scores[pair, col]
    order = np.argsort(-score, kind="stable")[:max_k]
    return subj[order], obj[order], col[order], score[order]


def triplet_hit_ranks(
    gt: ImageGT,
    pred: AlignedPrediction,
    predicate_ids: np.ndarray,
    *,
    graph_constraint: bool,
    max_k: int = max(DEFAULT_KS),
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """For each GT triplet of `gt` (R,), the 0-based rank of the best predicted triplet that
    matches it, or `max_k` when none of the top `max_k` does. Recall@K of the image is
    ``mean(ranks < K)`` for any K <= max_k.

    `predicate_ids` (F,) maps `pred.rel_scores` columns to GT predicate ids.
    """
    rels = gt.relations
    ranks = np.full(len(rels), max_k, dtype=np.int64)
    subj, obj, col, _ = ranked_triplets(pred, graph_constraint=graph_constraint, max_k=max_k)
    if len(rels) == 0 or len(subj) == 0:
        return ranks
    gs, go, gp = rels[:, 0], rels[:, 1], rels[:, 2]
    iou = box_iou(pred.boxes, gt.boxes)  # (M, N)
    match = (
        (pred.labels[subj][:, None] == gt.labels[gs][None, :])
        & (pred.labels[obj][:, None] == gt.labels[go][None, :])
        & (np.asarray(predicate_ids)[col][:, None] == gp[None, :])
        & (iou[subj][:, gs] >= iou_threshold)
        & (iou[obj][:, go] >= iou_threshold)
    )  # (T, R)
    hit = match.any(axis=0)
    ranks[hit] = np.argmax(match[:, hit], axis=0)
    return ranks


def recall_metrics(
    gt_images,
    preds,
    predicates: dict[int, str],
    *,
    graph_constraint: bool,
    ks=DEFAULT_KS,
    iou_threshold: float = 0.5,
    seen_triplets: set[tuple[int, int, int]] | None = None,
) -> dict | None:
    """R@K, mR@K and per-predicate recall over images (sequences of `ImageGT` and
    `AlignedPrediction`, aligned). None when no image has GT relations.

    Returns ``{"R@20": .., "mR@20": .., ..., "per_predicate": {name: {"R@20": .., ...}}}``;
    a predicate that never occurs in the GT has None values. With `seen_triplets` (the training
    set's (subject category id, predicate id, object category id), in the GT's ids) also
    ``"zR@20": ..`` (None when every GT triplet was seen in training) and ``"zero_shot_triplets"``.
    """
    pids = np.asarray(sorted(predicates), dtype=np.int64)
    max_k = max(ks)
    per_image: list[list[float]] = [[] for _ in ks]
    per_pred: dict[int, list[list[float]]] = {int(p): [[] for _ in ks] for p in pids}
    per_image_unseen: list[list[float]] = [[] for _ in ks]
    n_unseen = 0
    for g, p in zip(gt_images, preds, strict=True):
        if len(g.relations) == 0:
            continue
        ranks = triplet_hit_ranks(g, p, pids, graph_constraint=graph_constraint, max_k=max_k,
                                  iou_threshold=iou_threshold)
        gp = g.relations[:, 2]
        unseen = None
        if seen_triplets is not None:
            unseen = np.array([(int(g.labels[s]), int(p), int(g.labels[o])) not in seen_triplets
                               for s, o, p in g.relations], dtype=bool)
            n_unseen += int(unseen.sum())
        for i, k in enumerate(ks):
            hit = ranks < k
            per_image[i].append(float(hit.mean()))
            if unseen is not None and unseen.any():
                per_image_unseen[i].append(float(hit[unseen].mean()))
            for pid in np.unique(gp):
                per_pred[int(pid)][i].append(float(hit[gp == pid].mean()))
    if not per_image[0]:
        return None
    out: dict = {}
    for i, k in enumerate(ks):
        out[f"R@{k}"] = float(np.mean(per_image[i]))
    for i, k in enumerate(ks):
        present = [np.mean(v[i]) for v in per_pred.values() if v[i]]
        out[f"mR@{k}"] = float(np.mean(present))
    if seen_triplets is not None:
        for i, k in enumerate(ks):
            out[f"zR@{k}"] = float(np.mean(per_image_unseen[i])) if per_image_unseen[i] else None
        out["zero_shot_triplets"] = n_unseen
    out["per_predicate"] = {
        predicates[pid]: {f"R@{k}": (float(np.mean(v[i])) if v[i] else None) for i, k in enumerate(ks)}
        for pid, v in per_pred.items()
    }
    return out


def perfect_prediction(gt: ImageGT, predicate_ids) -> AlignedPrediction:
    """The prediction a perfect model makes for `gt`: GT boxes and classes with score 1, one
    relation per ordered GT pair (sorted) with score 1 on each true predicate and 0 elsewhere."""
    predicate_ids = np.asarray(predicate_ids, dtype=np.int64)
    col_of = {int(p): j for j, p in enumerate(predicate_ids)}
    pairs = sorted({(int(s), int(o)) for s, o, _ in gt.relations})
    row_of = {pair: i for i, pair in enumerate(pairs)}
    rel_scores = np.zeros((len(pairs), len(predicate_ids)))
    for s, o, pid in gt.relations:
        rel_scores[row_of[(int(s), int(o))], col_of[int(pid)]] = 1.0
    return AlignedPrediction(
        boxes=gt.boxes.copy(),
        labels=gt.labels.copy(),
        scores=np.ones(len(gt.boxes)),
        pairs=np.asarray(pairs, dtype=np.int64).reshape(-1, 2),
        rel_scores=rel_scores,
    )
