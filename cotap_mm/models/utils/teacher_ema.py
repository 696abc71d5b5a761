"""EMA teacher with CoTAP's cosine momentum schedule (docs/method.md §4.5)."""
import math
from typing import Tuple

import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import ExponentialMovingAverage
from torch import Tensor

from cotap_mm.registry import MODELS

__all__ = ['CoTAPTeacherEMA', 'teacher_momentum']


def teacher_momentum(step: int, total: int, start: float = 0.9997, end: float = 0.9999) -> float:
    """DINO-convention momentum m(i) = end + (start - end) (1 + cos(pi i / T)) / 2.

    The teacher update is theta_T <- m theta_T + (1 - m) theta_S (mmengine's "momentum" is 1 - m).
    """
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(step, total) / total))


@MODELS.register_module()
class CoTAPTeacherEMA(ExponentialMovingAverage):
    """Exponential moving average of the student with a cosine momentum over ``max_iters + 5``.

    The first :meth:`update_parameters` copies the student exactly (mmengine's convention, the
    teacher's "EMA with m = 0" of docs/method.md §4.1); the k-th later one (k = 1, 2, ...) uses
    ``m(k)``, so the update after iteration i uses ``m(i + 1)`` like the released code, whose
    global step is already incremented when the EMA runs. ``T = max_iters + 5`` is read from the
    message hub (set by mmengine's ``RuntimeInfoHook``) unless ``total_steps`` is given.

    Args:
        model (nn.Module): the student modules to average.
        momentum (tuple[float, float]): DINO-convention (start, end). Defaults to
            (0.9997, 0.9999).
        total_steps (int, optional): T; defaults to the run's ``max_iters + 5``.
    """

    def __init__(self,
                 model: nn.Module,
                 momentum: Tuple[float, float] = (0.9997, 0.9999),
                 total_steps: int = None,
                 **kwargs) -> None:
        start, end = momentum
        if not (0 <= start <= 1 and 0 <= end <= 1):
            raise ValueError(f'CoTAPTeacherEMA: momentum values must lie in [0, 1], got '
                             f'{momentum}')
        super().__init__(model, momentum=1 - start, **kwargs)
        self.momentum_range = (float(start), float(end))
        self.total_steps = total_steps

    def current_momentum(self, steps: int) -> float:
        total = self.total_steps
        if total is None:
            max_iters = MessageHub.get_current_instance().get_info('max_iters')
            if max_iters is None:
                raise RuntimeError('CoTAPTeacherEMA: max_iters is not in the message hub (run '
                                   'inside an mmengine Runner, or pass total_steps=)')
            total = max_iters + 5
        return teacher_momentum(steps, total, *self.momentum_range)

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        averaged_param.lerp_(source_param, 1 - self.current_momentum(int(steps)))
