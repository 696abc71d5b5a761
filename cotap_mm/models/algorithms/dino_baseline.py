"""A plain DINO-style self-distillation step on CoTAP's data layout (CLS cross-entropy to the
centred, sharpened EMA teacher), built from the same backbone, head, preprocessor and EMA as
:class:`CoTAP`: the reference the training-step benchmark measures CoTAP's extra cost against."""
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModel
from torch.profiler import record_function

from cotap_mm.registry import MODELS
from ..utils import CoTAPTeacherEMA, select_crops

__all__ = ['DINOBaseline']


@MODELS.register_module()
class DINOBaseline(BaseModel):
    """A DINO-style student/teacher step on CoTAP's data layout: the baseline that
    ``tools/benchmark_train.py`` times CoTAP against (docs/benchmarks.md).

    Every one of the 4 images of an item (2 subsets x the kNN pair) is an independent DINO
    sample with G global and L local crops: the EMA teacher sees the clean globals, the student
    all crops; the loss is DINO's cross-entropy between the teacher's centred, sharpened softmax
    of global crop i and the student's softmax of every other crop j != i. The step's parts run
    inside ``torch.profiler.record_function`` under the names :class:`CoTAP` uses for the same
    parts: ``'cotap::teacher forward'``, ``'cotap::student forward'`` and ``'cotap::cls losses'``
    (the DINO loss and the centre update).

    Args:
        backbone (dict): backbone config (built with out_type 'oaf_raw' if it has the OAF,
            else 'raw'); its CLS token (B, C) feeds the head.
        cls_head (dict): head config; ``in_channels`` is set to the backbone's token width.
        data_preprocessor (nn.Module): the CoTAP data preprocessor (clean teacher views,
            augmented student views).
        num_crops (tuple[int, int]): (G, L).
        teacher_momentum (tuple[float, float]): EMA momentum start/end (DINO convention).
        momentum_steps (int): length of the momentum schedule.
    """

    def __init__(self, backbone: dict, cls_head: dict, data_preprocessor: nn.Module,
                 num_crops=(2, 4), teacher_momentum=(0.9997, 0.9999), momentum_steps=1000,
                 teacher_temp=0.04, student_temp=0.1, center_momentum=0.9):
        super().__init__(data_preprocessor=data_preprocessor)
        with_oaf = backbone.get('with_oaf', True)
        self.backbone = MODELS.build(dict(backbone, out_type='oaf_raw' if with_oaf else 'raw'))
        width = self.backbone.embed_dims * (2 if with_oaf else 1)
        self.cls_head = MODELS.build(dict(cls_head, in_channels=width))
        self.num_global, self.num_local = (int(n) for n in num_crops)
        self.teacher_temp, self.student_temp = teacher_temp, student_temp
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, self.cls_head.num_prototypes))
        self.teacher = CoTAPTeacherEMA(self._student(), momentum=teacher_momentum,
                                       total_steps=momentum_steps)

    def _student(self) -> nn.ModuleDict:
        return nn.ModuleDict(dict(backbone=self.backbone, cls_head=self.cls_head))

    @torch.no_grad()
    def update_teacher(self) -> None:
        self.teacher.update_parameters(self._student())

    def _crops(self, views: List[torch.Tensor], kind: str) -> torch.Tensor:
        """All 4 images' crops of one kind, crop-major: (n * 4B, 3, S, S)."""
        return select_crops(views, (self.num_global, self.num_local), range(4), kind,
                            crop_major=True)

    def forward(self, inputs, data_samples=None, mode='loss'):
        if mode != 'loss':
            raise ValueError(f'DINOBaseline: only mode="loss", got {mode!r}')
        s_in, t_in = inputs['student'], inputs['teacher']
        G = self.num_global
        with torch.no_grad(), record_function('cotap::teacher forward'):
            teacher = self.teacher.module
            t_out = teacher.cls_head(teacher.backbone(self._crops(t_in, 'global'))[0][:, 0])
        with record_function('cotap::student forward'):
            s_out = [self.cls_head(self.backbone(self._crops(s_in, 'global'))[0][:, 0])]
            if self.num_local:
                s_out.append(self.cls_head(self.backbone(self._crops(s_in, 'local'))[0][:, 0]))
        with record_function('cotap::cls losses'):
            t_prob = F.softmax((t_out - self.center) / self.teacher_temp, dim=-1).chunk(G)
            s_logp = F.log_softmax(torch.cat(s_out).float() / self.student_temp,
                                   dim=-1).chunk(G + self.num_local)
            loss, terms = 0., 0
            for i, q in enumerate(t_prob):
                for j, logp in enumerate(s_logp):
                    if i != j:
                        loss = loss + torch.sum(-q.float() * logp, dim=-1).mean()
                        terms += 1
            with torch.no_grad():
                self.center.mul_(self.center_momentum).add_(
                    t_out.float().mean(0, keepdim=True), alpha=1 - self.center_momentum)
        return dict(loss_dino=loss / terms)
