"""Quick dense linear probe of the backbone during pretraining.

Every ``interval`` training iterations :class:`DenseProbeHook` extracts the backbone's 2D-wide
patch features on a small labelled segmentation subset, fits a 1x1-conv (linear) probe on part of
it with Adam and logs the mIoU on the rest, as ``probe/mIoU`` (and ``probe/aAcc``).

Example (pretraining config, ``default_scope='mmpretrain'``)::

    custom_hooks = [
        dict(type='TeacherEMAHook'),
        dict(type='DenseProbeHook', interval=1600, num_images=100, img_size=224,
             dataset=dict(type='PascalVOCDataset', data_root='data/VOCdevkit/VOC2012',
                          data_prefix=dict(img_path='JPEGImages',
                                           seg_map_path='SegmentationClass'),
                          ann_file='ImageSets/Segmentation/val.txt')),
    ]
    # keep the checkpoint with the best probe mIoU
    default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1600,
                                         save_best='probe/mIoU', rule='greater'))

The dataset config is built in mmsegmentation's scope; its ``pipeline`` is ignored: the hook reads
each image as the evaluation tools do (:func:`cotap_mm.utils.images.load_squashed`: RGB, squashed
to ``img_size``, bilinear) and normalises it with the config's normalisation
(``model.data_preprocessor``'s mean/std, :func:`cotap_mm.models.utils.get_normalization`); labels
come from mmseg's ``LoadAnnotations`` (so ``label_map`` and ``reduce_zero_label`` of the dataset
apply), resized (nearest) to ``img_size``.

Best-checkpoint selection: there is no validation loop in iteration-based pretraining, so the hook
hands its metrics to every :class:`~mmengine.hooks.CheckpointHook` whose ``save_best`` keys are
all among them (e.g. ``save_best='probe/mIoU'``; ``'auto'`` is not served) by calling that hook's
``after_val_epoch(runner, metrics)``, which is exactly what a ``ValLoop`` would trigger. Only
CheckpointHooks are called: ``runner.call_hook('after_val_epoch')`` would also run the
LoggerHook's validation logging, which needs a val dataloader. The probe of the model after ``k``
iterations runs at the start of iteration ``k`` (``before_train_iter``, where ``runner.iter == k``,
as in a ``ValLoop``), so best checkpoints are named ``best_probe_mIoU_iter_{k}.pth`` and carry
``iter=k``; the probe after the last iteration runs in ``after_train``.

In distributed training every rank runs the (deterministic) probe on its own copy of the subset.
"""
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import MMLogger
from mmengine.model import is_model_wrapper
from mmengine.registry import DefaultScope

from cotap_mm.evaluation.functional import (confusion_matrix, fit_dense_linear_probe,
                                            segmentation_metrics)
from cotap_mm.models.utils import get_normalization, tokens_to_map
from cotap_mm.registry import HOOKS
from cotap_mm.utils.checks import check_choice, check_positive_int
from cotap_mm.utils.images import load_squashed

__all__ = ['DenseProbeHook']


@HOOKS.register_module()
class DenseProbeHook(Hook):
    """Log the mIoU of a quick linear probe on the backbone's patch features.

    Args:
        dataset (dict | Dataset, optional): mmseg dataset (config, built in mmseg's scope, or a
            built dataset with ``get_data_info``) whose samples have ``img_path`` and
            ``seg_map_path``. ``None``: the hook does nothing (one info line).
        val_dataset (dict | Dataset, optional): Separate evaluation set; then all of ``dataset``
            (up to ``num_images``) is used for fitting.
        num_classes (int, optional): Default: ``len(dataset.metainfo['classes'])``.
        interval (int): Probe after every ``interval`` iterations (released: 1600) and after
            the last one.
        probe_at_start (bool): Also probe the weights training starts (or resumes) from.
        num_images (int, optional): Use the first ``num_images`` samples of ``dataset`` (and of
            ``val_dataset``); ``None``: all.
        fit_ratio (float): Without ``val_dataset``: fraction of the subset used for fitting, the
            rest is evaluated (default 0.8).
        img_size (int | tuple[int, int]): Size images and labels are resized to.
        which (str): ``'student'`` (default; released evaluation uses the student) or
            ``'teacher'`` (``model.teacher.module.backbone``).
        probe_iters (int): Adam steps of the probe.
        probe_lr (float): Adam learning rate.
        probe_batch_size (int, optional): Images per Adam step; ``None``: full batch.
        batch_size (int): Images per backbone forward during feature extraction.
        normalize_features (bool): Standardise feature channels before the probe.
        ignore_index (int): Label to ignore.
        seed (int): Seed of the probe's private generator.
        save_best (bool): Hand the metrics to matching ``CheckpointHook``s (see module doc).
        prefix (str): Metric name prefix.
    """
    priority = 'LOW'  # before CheckpointHook (VERY_LOW), so its after_train sees the last best

    def __init__(self,
                 dataset=None,
                 val_dataset=None,
                 num_classes: Optional[int] = None,
                 interval: int = 1600,
                 probe_at_start: bool = False,
                 num_images: Optional[int] = 100,
                 fit_ratio: float = 0.8,
                 img_size: Union[int, Sequence[int]] = 224,
                 which: str = 'student',
                 probe_iters: int = 200,
                 probe_lr: float = 1e-2,
                 probe_batch_size: Optional[int] = 16,
                 batch_size: int = 16,
                 normalize_features: bool = True,
                 ignore_index: int = 255,
                 seed: int = 0,
                 save_best: bool = True,
                 prefix: str = 'probe'):
        check_choice('DenseProbeHook', 'which', which, ('student', 'teacher'))
        check_positive_int('DenseProbeHook', 'interval', interval)
        if not 0 < fit_ratio < 1:
            raise ValueError(f'DenseProbeHook: fit_ratio must be in (0, 1), got {fit_ratio!r}')
        self.dataset_cfg = dataset
        self.val_dataset_cfg = val_dataset
        self.num_classes = num_classes
        self.interval = interval
        self.probe_at_start = probe_at_start
        self.num_images = num_images
        self.fit_ratio = fit_ratio
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.which = which
        self.probe_iters = probe_iters
        self.probe_lr = probe_lr
        self.probe_batch_size = probe_batch_size
        self.batch_size = batch_size
        self.normalize_features = normalize_features
        self.ignore_index = ignore_index
        self.seed = seed
        self.save_best = save_best
        self.prefix = prefix
        self._data = None  # (fit_imgs, fit_labels, val_imgs, val_labels), normalised, on CPU
        self._start_iter = 0
        self._last_probed = None
        self.enabled = dataset is not None

    # ------------------------------------------------------------------ data
    @staticmethod
    def _build_dataset(cfg):
        if not isinstance(cfg, dict):
            return cfg
        from mmseg.registry import DATASETS
        cfg = dict(cfg)
        cfg['pipeline'] = []  # samples are loaded by the hook itself
        with DefaultScope.overwrite_default_scope('mmseg'):
            return DATASETS.build(cfg)

    def _load(self, dataset, indices, mean, std):
        from mmseg.datasets.transforms import LoadAnnotations
        load_ann = LoadAnnotations()
        imgs, labels = [], []
        for i in indices:
            info = dataset.get_data_info(i)
            info.setdefault('seg_fields', [])
            info.setdefault('reduce_zero_label', False)
            imgs.append(load_squashed(info['img_path'], self.img_size, mean, std)[1])
            seg = torch.from_numpy(load_ann(info)['gt_seg_map'].astype(np.float32))[None, None]
            labels.append(F.interpolate(seg, size=self.img_size, mode='nearest').long()[:, 0])
        return torch.stack(imgs), torch.cat(labels)

    def _prepare(self, runner, logger):
        mean, std = get_normalization(runner.cfg)
        dataset = self._build_dataset(self.dataset_cfg)
        if self.num_classes is None:
            self.num_classes = len(dataset.metainfo['classes'])
        cap = len(dataset) if self.num_images is None else min(self.num_images, len(dataset))
        if self.val_dataset_cfg is not None:
            val_dataset = self._build_dataset(self.val_dataset_cfg)
            vcap = (len(val_dataset) if self.num_images is None else
                    min(self.num_images, len(val_dataset)))
            fit = self._load(dataset, range(cap), mean, std)
            val = self._load(val_dataset, range(vcap), mean, std)
        else:
            if cap < 2:
                raise ValueError('DenseProbeHook: need at least 2 images to split into fit/eval '
                                 f'parts, got {cap}')
            n_fit = min(cap - 1, max(1, int(round(self.fit_ratio * cap))))
            imgs, labels = self._load(dataset, range(cap), mean, std)
            fit, val = (imgs[:n_fit], labels[:n_fit]), (imgs[n_fit:], labels[n_fit:])
        self._data = (*fit, *val)
        logger.info(f'DenseProbeHook: {len(fit[0])} fit / {len(val[0])} eval images at '
                    f'{self.img_size}, {self.num_classes} classes, {self.which} backbone')

    # ------------------------------------------------------------------ model
    def _backbone(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if self.which == 'teacher':
            teacher = model.teacher
            model = getattr(teacher, 'module', teacher)
        return model.backbone

    @staticmethod
    def to_feature_map(out, img_hw):
        """Backbone output -> (B, C, h, w): a map as is; tokens (B, [1+]N, C), with or without a
        CLS token first, on the patch grid of an ``img_hw`` image (its aspect ratio)."""
        if isinstance(out, (tuple, list)):  # one output per out_index: take the last
            out = out[-1]
        if isinstance(out, (tuple, list)):  # e.g. mmseg's ViT [patch_map, cls_token]
            out = out[0]
        if out.dim() == 4:
            return out
        T = out.shape[1]
        for n in (T, T - 1):  # all tokens are patches, or the first is a CLS token
            h = max(1, round(math.sqrt(n * img_hw[0] / img_hw[1])))
            if n % h == 0:
                return tokens_to_map(out[:, T - n:], (h, n // h))
        raise ValueError(f'DenseProbeHook: {T} tokens are not the patch grid of a {img_hw} image '
                         '(with or without a CLS token)')

    def _extract(self, backbone, imgs):
        device = next(backbone.parameters()).device
        return torch.cat([self.to_feature_map(backbone(imgs[s:s + self.batch_size].to(device)),
                                              self.img_size).float()
                          for s in range(0, len(imgs), self.batch_size)])

    # ------------------------------------------------------------------ probe
    def evaluate(self, runner):
        """Run the probe now; log and return ``{prefix/mIoU, prefix/aAcc}`` (or None if off)."""
        if not self.enabled:
            return None
        logger = MMLogger.get_current_instance()
        if self._data is None:
            self._prepare(runner, logger)
        fit_imgs, fit_labels, val_imgs, val_labels = self._data
        backbone = self._backbone(runner)
        modes = {m: m.training for m in backbone.modules()}
        backbone.eval()
        try:
            with torch.no_grad():
                fit_feats = self._extract(backbone, fit_imgs)
                val_feats = self._extract(backbone, val_imgs)
        finally:
            for m, mode in modes.items():
                m.training = mode
        device = fit_feats.device
        predict = fit_dense_linear_probe(
            fit_feats, fit_labels.to(device), self.num_classes, iters=self.probe_iters,
            lr=self.probe_lr, batch_size=self.probe_batch_size, ignore_index=self.ignore_index,
            normalize=self.normalize_features, seed=self.seed)
        preds = torch.cat([predict(val_feats[s:s + self.batch_size]).argmax(1)
                           for s in range(0, len(val_feats), self.batch_size)])
        C = self.num_classes
        scores = segmentation_metrics(
            confusion_matrix(preds.cpu(), val_labels, C, C, self.ignore_index))
        # logged as fractions in [0, 1] (the metrics of the hook's history)
        metrics = {f'{self.prefix}/mIoU': scores['mIoU'] / 100,
                   f'{self.prefix}/aAcc': scores['aAcc'] / 100}
        step = runner.iter
        for key, value in metrics.items():
            runner.message_hub.update_scalar(key, value)
        runner.visualizer.add_scalars(metrics, step=step)
        logger.info(f'DenseProbeHook: iter {step}: {self.which} linear probe '
                    + ', '.join(f'{k}: {v:.4f}' for k, v in metrics.items()))
        self._last_probed = step
        if self.save_best:
            self._notify_checkpoint_hooks(runner, metrics)
        return metrics

    @staticmethod
    def _notify_checkpoint_hooks(runner, metrics):
        for hook in runner.hooks:
            keys = getattr(hook, 'key_indicators', None)
            if (isinstance(hook, CheckpointHook) and hook.save_best and keys
                    and all(k in metrics for k in keys)):
                hook.after_val_epoch(runner, metrics)

    # ------------------------------------------------------------------ hook points
    def before_train(self, runner) -> None:
        if not self.enabled:
            MMLogger.get_current_instance().info(
                'DenseProbeHook: no labelled subset configured (dataset=None); probe is off')
            return
        self._start_iter = runner.iter

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        it = runner.iter  # iterations completed so far
        if not self.enabled or it % self.interval or self._last_probed == it:
            return
        if it == self._start_iter and not self.probe_at_start:
            return
        self.evaluate(runner)

    def after_train(self, runner) -> None:
        it = runner.iter
        if self.enabled and self._last_probed != it:  # the final model, if not probed yet
            self.evaluate(runner)
