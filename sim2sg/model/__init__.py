"""sim2sg.model: the scene-graph networks (`frcnn`: ResNet-FPN Faster R-CNN + relation head;
`fast`: a one-stage centre detector + pair relation head, batched), `build_model` to pick one, and
Sim2SG's gradient reversal layers and domain classifiers."""

from sim2sg.model.build import ARCHS, BACKBONES_OF, build_model, check_backbone
from sim2sg.model.config import ALIGN_MODES, BACKBONES, ModelConfig
from sim2sg.model.fast import SceneGraphCenterNet
from sim2sg.model.grl import GradReverse, dann_lambda, grad_reverse, grl_schedule
from sim2sg.model.sgg import SceneGraphRCNN

__all__ = ["ALIGN_MODES", "ARCHS", "BACKBONES", "BACKBONES_OF", "GradReverse", "ModelConfig", "SceneGraphCenterNet",
           "SceneGraphRCNN", "build_model", "check_backbone", "dann_lambda", "grad_reverse", "grl_schedule"]
