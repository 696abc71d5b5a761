"""Smoke demo: one honest CoTAP-style training step of a tiny ViT on generated images (CPU).

    python tools/smoke_demo.py [configs/smoke/smoke_tiny.py]

Builds the backbone and ``ContinuousAPLoss`` from the config through the registries, makes two
random crop/flip views of random images, and runs one step:

- student patch features of view 1 colour-jittered, teacher (frozen copy, no grad) patch
  features of the clean views 1 and 2;
- for every pair (patch i of view 1, patch j of view 2) of the batch: the prediction is
  ``cos(student_1[i], teacher_2[j])``, the target ``cos(teacher_1[i], teacher_2[j])``, and the
  pair is positive when both patches come from the same image; all pairs form one list, as the
  official code does per scale;
- ContinuousAPLoss -> backward -> AdamW step; the loss on the same views is printed before and
  after the step. Exits with status 1 if a loss, gradient or parameter is not finite.
"""
import argparse
import copy
import os.path as osp
import sys
import time

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

DEFAULT_CONFIG = osp.join(osp.dirname(osp.abspath(__file__)), '..', 'configs', 'smoke',
                          'smoke_tiny.py')


def make_views(num_images, img_size, crop_size, generator):
    """Two random crop + horizontal-flip views of ``num_images`` smooth random images.

    Returns:
        tuple[Tensor, Tensor]: views 1 and 2, each (num_images, 3, crop_size, crop_size).
    """
    if not 0 < crop_size <= img_size:
        raise ValueError(f'data.crop_size must be in (0, img_size={img_size}], got {crop_size}')
    # low-frequency noise upsampled, so that neighbouring patches are alike (as in real images)
    coarse = torch.rand(num_images, 3, img_size // 16, img_size // 16, generator=generator)
    images = F.interpolate(coarse, size=(img_size, img_size), mode='bilinear',
                           align_corners=False)
    views = []
    for _ in range(2):
        crops = []
        for img in images:
            top, left = torch.randint(0, img_size - crop_size + 1, (2, ), generator=generator)
            crop = img[:, top:top + crop_size, left:left + crop_size]
            if torch.rand((), generator=generator) < 0.5:
                crop = crop.flip(-1)
            crops.append(crop)
        views.append(torch.stack(crops))
    return views[0], views[1]


def colour_jitter(x, generator, strength=0.4):
    """Per-image random brightness/contrast change of (B, 3, H, W) images in [0, 1].

    As in the official code, the student sees colour-jittered crops and the teacher the same
    crops without jitter, so that predictions and targets differ.
    """
    b = x.shape[0]
    brightness = 1 + strength * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    contrast = 1 + strength * (2 * torch.rand(b, 1, 1, 1, generator=generator) - 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x * brightness - mean) * contrast + mean).clamp(0, 1)


def patch_features(backbone, x):
    """(B, 3, H, W) -> L2-normalised patch features (B * H/p * W/p, C) and their image ids."""
    (featmap, ) = backbone(x)  # (B, C, h, w)
    b, c, h, w = featmap.shape
    feats = featmap.permute(0, 2, 3, 1).reshape(b * h * w, c)
    image_ids = torch.arange(b).repeat_interleave(h * w)
    return F.normalize(feats, dim=-1), image_ids


def pair_lists(student, teacher, view1, view2, student_view1):
    """Predictions, targets and positive mask over all (view-1 patch, view-2 patch) pairs.

    The student sees ``student_view1`` (view 1 colour-jittered), the teacher view 1 and view 2.

    Returns:
        tuple[Tensor, Tensor, Tensor]: pred (n, ) with grad, target (n, ) without, pos_mask (n, )
        bool, n = (B * patches per view) ** 2.
    """
    s1, ids1 = patch_features(student, student_view1)
    with torch.no_grad():
        t1, _ = patch_features(teacher, view1)
        t2, ids2 = patch_features(teacher, view2)
        target = (t1 @ t2.T).flatten()
    pred = (s1 @ t2.T).flatten()
    pos_mask = (ids1[:, None] == ids2[None, :]).flatten()
    return pred, target, pos_mask


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG, help='smoke config file')
    args = parser.parse_args(argv)

    start = time.perf_counter()
    cfg = Config.fromfile(args.config)  # custom_imports: imports and registers cotap_mm
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    torch.manual_seed(cfg.data.seed)

    from mmpretrain.registry import MODELS
    student = MODELS.build(cfg.model)
    # init_weights() logs one INFO record per parameter to the *current* MMLogger: run it while a
    # WARNING-level logger is current, then make the demo's logger current.
    MMLogger.get_instance('cotap_mm_smoke_init', log_level='WARNING')
    student.init_weights()
    logger = MMLogger.get_instance('cotap_mm_smoke', log_level='INFO')
    criterion = MODELS.build(cfg.loss)
    teacher = copy.deepcopy(student).eval().requires_grad_(False)
    optim_wrapper = build_optim_wrapper(student, cfg.optim_wrapper)
    logger.info(f'student {type(student).__name__}(arch={cfg.model.arch!r}), '
                f'{sum(p.numel() for p in student.parameters())} parameters; loss {criterion}')

    gen = torch.Generator().manual_seed(cfg.data.seed)
    view1, view2 = make_views(cfg.data.num_images, cfg.data.img_size, cfg.data.crop_size, gen)
    jittered = colour_jitter(view1, gen)

    student.train()
    pred, target, pos_mask = pair_lists(student, teacher, view1, view2, jittered)
    loss = criterion(pred, target, pos_mask)
    logger.info(f'list of {pred.numel()} patch pairs ({int(pos_mask.sum())} positive); '
                f'loss before step: {loss.item():.6f}')
    if not torch.isfinite(loss):
        logger.error('loss before the step is not finite')
        return 1
    optim_wrapper.backward(loss)
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    if not grads or not all(torch.isfinite(g).all() for g in grads):
        logger.error('no gradient reached the student, or a gradient is not finite')
        return 1
    optim_wrapper.step()  # AdamW
    optim_wrapper.zero_grad()
    params_ok = all(torch.isfinite(p).all() for p in student.parameters())

    with torch.no_grad():
        pred_after, _, _ = pair_lists(student, teacher, view1, view2, jittered)
        loss_after = criterion(pred_after, target, pos_mask)
    logger.info(f'loss after step:  {loss_after.item():.6f} '
                f'(change {loss_after.item() - loss.item():+.6f}); '
                f'{time.perf_counter() - start:.1f}s')
    if loss_after > loss:
        # expected now and then: the rank-plus count P of the loss is piecewise constant (it has
        # no gradient), so a step along the gradient can reorder near-tied predictions and raise
        # it (a property of the AP surrogate, not a failed step)
        logger.info('(a single step may raise the loss: its rank-plus term has no gradient)')
    if not (torch.isfinite(loss_after) and params_ok):
        logger.error('loss or parameters after the step are not finite')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
