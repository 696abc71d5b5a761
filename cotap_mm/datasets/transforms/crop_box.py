"""The crop-box sampler of torchvision's ``RandomResizedCrop.get_params``, on ``np.random``
(the process RNG that mmengine seeds per worker), shared by the multi-crop and the segmentation
crop transforms."""
import math
from typing import Sequence, Tuple

import numpy as np

__all__ = ['random_resized_crop_box']


def random_resized_crop_box(height: int, width: int, scale: Sequence[float],
                            ratio: Sequence[float], attempts: int = 10) -> Tuple[int, int, int, int]:
    """(y, x, h, w) of a crop covering ``scale`` of the area with aspect ``ratio`` (log-uniform).

    After ``attempts`` draws that do not fit, the whole image cropped centrally to the nearest
    allowed aspect ratio (as torchvision).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * np.random.uniform(scale[0], scale[1])
        aspect = math.exp(np.random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y = np.random.randint(0, height - h + 1)
            x = np.random.randint(0, width - w + 1)
            return y, x, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
