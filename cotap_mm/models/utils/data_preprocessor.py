"""CoTAP data preprocessor: clean teacher views and photometrically augmented student views
(docs/method.md §5.3), vectorised over the batch."""
from typing import List, Optional, Sequence

import torch
from mmpretrain.models.utils.data_preprocessor import SelfSupDataPreprocessor

from cotap_mm.registry import MODELS
from cotap_mm.utils.checks import check_choice, check_positive
from cotap_mm.utils.images import IMAGENET_MEAN, IMAGENET_STD
from .gaussian_blur import gaussian_blur

__all__ = ['CoTAPDataPreprocessor', 'BatchPhotometricAug', 'rgb_to_hsv', 'hsv_to_rgb']

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma, as torchvision."""
    r, g, b = x.unbind(dim=1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision ``_blend`` for floats with a per-image ratio (N,)."""
    ratio = ratio.view(-1, 1, 1, 1)
    return (ratio * a + (1.0 - ratio) * b).clamp_(0.0, 1.0)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (torchvision's algorithm)."""
    r, g, b = x.unbind(dim=1)
    maxc = x.max(dim=1).values
    minc = x.min(dim=1).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) HSV in [0, 1] -> RGB.

    Closed form ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 h) mod 6``,
    n = 5, 3, 1 for R, G, B: the same values as torchvision's sector-table version (tested),
    without its (N, 3, 6, H, W) intermediate (~15x faster on CPU).
    """
    h, s, v = x.unbind(dim=1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    v, s = v.unsqueeze(1), s.unsqueeze(1)
    return (v - v * s * w).clamp_(0.0, 1.0)


def adjust_brightness(x, f):
    return _blend(x, torch.zeros_like(x), f)


def adjust_contrast(x, f):
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x, f):
    return _blend(x, _gray(x), f)


def adjust_hue(x, f):
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


class BatchPhotometricAug:
    """SimCLR/DINO-style photometric augmentation of float RGB images in [0, 1] (docs/method.md §5.3).

    ``RandomApply(ColorJitter(b, c, s, h), p_jitter)`` (random op order),
    ``RandomGrayscale(p_gray)``, ``RandomApply(GaussianBlur(kernel, sigma), p_blur)``; same
    formulas as torchvision (checked in tests). Parameters are drawn per *unit*: ``__call__``
    takes ``x`` (N, 3, H, W) and ``groups`` (N,) long, and images with the same group id share
    every random draw (op order, factors, coin flips, sigma). One group per image = torchvision
    applied image by image; one group per crop slot = the released per-slot behaviour.
    """

    OPS = ('brightness', 'contrast', 'saturation', 'hue')

    def __init__(self, jitter=(0.8, 0.8, 0.8, 0.2), p_jitter=0.8, p_gray=0.2,
                 blur_kernel=7, blur_sigma=(0.1, 2.0), p_blur=0.5):
        check_positive('BatchPhotometricAug', 'blur_sigma[0]', blur_sigma[0])
        b, c, s, h = jitter
        self.ranges = [(max(0., 1 - b), 1 + b), (max(0., 1 - c), 1 + c),
                       (max(0., 1 - s), 1 + s), (-h, h)]
        self.p_jitter, self.p_gray, self.p_blur = p_jitter, p_gray, p_blur
        self.blur_kernel, self.blur_sigma = blur_kernel, blur_sigma
        self.fns = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)

    def sample_params(self, num: int, device=None) -> dict:
        """Draw ``num`` independent parameter sets (tensors with leading dim ``num``)."""
        u = lambda lo, hi: torch.empty(num, device=device).uniform_(lo, hi)  # noqa: E731
        return dict(
            jitter=torch.rand(num, device=device) < self.p_jitter,
            order=torch.rand(num, 4, device=device).argsort(dim=1),
            factors=torch.stack([u(*r) for r in self.ranges], dim=1),        # (num, 4)
            gray=torch.rand(num, device=device) < self.p_gray,
            blur=torch.rand(num, device=device) < self.p_blur,
            sigma=u(*self.blur_sigma))

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Apply per-image ``params`` (leading dim N) to ``x`` (N, 3, H, W) in [0, 1]."""
        x = x.clone()
        for pos in range(4):
            for op, fn in enumerate(self.fns):
                idx = (params['jitter'] & (params['order'][:, pos] == op)).nonzero()[:, 0]
                if idx.numel():
                    x[idx] = fn(x[idx], params['factors'][idx, op].to(x.dtype))
        idx = params['gray'].nonzero()[:, 0]
        if idx.numel():
            x[idx] = _gray(x[idx]).expand(-1, 3, -1, -1)
        idx = params['blur'].nonzero()[:, 0]
        if idx.numel():
            x[idx] = gaussian_blur(x[idx], self.blur_kernel, params['sigma'][idx])
        return x

    def __call__(self, x: torch.Tensor, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
        if groups is None:
            groups = torch.arange(x.shape[0], device=x.device)
        num = int(groups.max()) + 1 if groups.numel() else 0
        params = {k: v[groups] for k, v in self.sample_params(num, x.device).items()}
        return self.apply(x, params)


@MODELS.register_module()
class CoTAPDataPreprocessor(SelfSupDataPreprocessor):
    """Teacher (clean) and student (photometrically augmented) views of the CoTAP crops.

    Input: the ``default_collate``d dict with ``inputs`` = list of uint8 tensors (B, 3, S_v,
    S_v), one per view (24 as released: 2 subsets x 2 images x (G + L) crops, a count that
    :class:`CoTAP` checks against ``model.num_crops``) in the order of
    :class:`CoTAPDualDataset`, and ``data_samples``.

    Output: ``dict(inputs=dict(student=[...], teacher=[...]), data_samples=...)``, two lists of
    as many float tensors (B, 3, S_v, S_v) in the same order:

    - ``teacher``: ``(x - mean) / std`` of the clean crops (0-255 units, RGB if ``to_rgb``);
    - ``student``: the crops, as RGB in [0, 1], through :class:`BatchPhotometricAug`
      (ColorJitter(0.8, 0.8, 0.8, 0.2) w.p. 0.8, grayscale w.p. 0.2, 7x7 Gaussian blur with
      sigma ~ U[0.1, 2] w.p. 0.5; no solarisation), then normalised the same way. It is
      computed in train and eval mode alike.

    ``jitter_granularity`` (docs/method.md §8):

    - ``'per_image'`` (default, corrected): independent parameters for every image of every
      slot;
    - ``'per_slot_batch'`` (released code): one draw per crop slot, shared by the B images of
      that slot.

    Both modes are vectorised: all slots of one size are augmented as one batch.

    Args:
        mean, std (Sequence[float]): In 0-255 units. Default: ImageNet.
        to_rgb (bool): Flip BGR (``LoadImageFromFile``) to RGB. Defaults to True.
        jitter_granularity (str): See above. Defaults to ``'per_image'``.
        aug_cfg (dict, optional): Keyword arguments of :class:`BatchPhotometricAug`.
        **kwargs: Other :class:`SelfSupDataPreprocessor` arguments.
    """

    GRANULARITIES = ('per_image', 'per_slot_batch')

    def __init__(self,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 to_rgb: bool = True,
                 jitter_granularity: str = 'per_image',
                 aug_cfg: Optional[dict] = None,
                 **kwargs):
        check_choice('CoTAPDataPreprocessor', 'jitter_granularity', jitter_granularity,
                     self.GRANULARITIES)
        if mean is None or std is None:
            raise ValueError('CoTAPDataPreprocessor: mean and std are required (0-255 units)')
        super().__init__(mean=mean, std=std, to_rgb=to_rgb, **kwargs)
        self.jitter_granularity = jitter_granularity
        self.aug = BatchPhotometricAug(**(aug_cfg or {}))

    def augment(self, views: List[torch.Tensor]) -> List[torch.Tensor]:
        """Photometric augmentation of float [0, 1] RGB views (list of (B, 3, S_v, S_v))."""
        out: List[Optional[torch.Tensor]] = [None] * len(views)
        by_shape = {}
        for i, v in enumerate(views):
            by_shape.setdefault(tuple(v.shape), []).append(i)
        for shape, slots in by_shape.items():
            b = shape[0]
            x = torch.cat([views[i] for i in slots])                # (len(slots) * B, 3, S, S)
            if self.jitter_granularity == 'per_image':
                groups = torch.arange(x.shape[0], device=x.device)
            else:
                groups = torch.arange(len(slots), device=x.device).repeat_interleave(b)
            for i, y in zip(slots, self.aug(x, groups).split(b)):
                out[i] = y
        return out

    def forward(self, data: dict, training: bool = False) -> dict:
        if not isinstance(data, dict) or 'inputs' not in data:
            raise TypeError('CoTAPDataPreprocessor: expected the dict of default_collate '
                            "(set train_dataloader.collate_fn=dict(type='default_collate'))")
        data = self.cast_data(data)
        inputs, data_samples = data['inputs'], data.get('data_samples')
        if not isinstance(inputs, (list, tuple)):
            raise TypeError('CoTAPDataPreprocessor: inputs must be the list of crop views '
                            f'(CoTAPDualDataset + PackInputs), got {type(inputs)}')
        if self._channel_conversion:
            inputs = [x[:, [2, 1, 0], ...] for x in inputs]
        inputs = [x.float() for x in inputs]
        teacher = [(x - self.mean) / self.std for x in inputs]
        student = self.augment([x / 255.0 for x in inputs])
        student = [(x * 255.0 - self.mean) / self.std for x in student]
        return dict(inputs=dict(student=student, teacher=teacher), data_samples=data_samples)
