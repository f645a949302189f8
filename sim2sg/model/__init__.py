"""sim2sg.model: the scene-graph network (ResNet-FPN Faster R-CNN + relation head) and Sim2SG's
gradient reversal layers and domain classifiers."""

from sim2sg.model.grl import GradReverse, dann_lambda, grad_reverse, grl_schedule
from sim2sg.model.sgg import (
           ALIGN_MODES,
           BACKBONES,
           ModelConfig,
           SceneGraphRCNN,
           build_model,
)

__all__ = ["ALIGN_MODES", "BACKBONES", "GradReverse", "ModelConfig", "SceneGraphRCNN", "build_model",
           "dann_lambda", "grad_reverse", "grl_schedule"]
