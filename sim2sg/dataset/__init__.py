"""sim2sg.dataset: labelled samples -> dataset files (images, masks, labels.json, KITTI, CLEVR), and
labels.json loading/validation for the trainer and the evaluator."""

from sim2sg.dataset.coco import load_labels, validate_dataset, validate_labels

__all__ = ["load_labels", "validate_dataset", "validate_labels"]
