"""CoTAP: continued self-distillation of a ViT with the CoTAP ranking loss and the object-aware
filter (``docs/method.md`` §4)."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.dist import get_world_size
from mmengine.logging import MessageHub
from mmpretrain.models import BaseSelfSupervisor
from mmpretrain.structures import DataSample
from torch import Tensor
from torch.profiler import record_function

from cotap_mm.registry import MODELS
from ..utils import (CoTAPTeacherEMA, FeatureQueue, attention_foreground_mask, check_num_crops,
                     code_entropy, per_crop, select_crops, sinkhorn_knopp, tokens_to_map)

__all__ = ['CoTAP']

LOSS_TERMS = ('inner_patch', 'inner_cls', 'cotap', 'intra_cls', 'entropy')


@MODELS.register_module()
class CoTAP(BaseSelfSupervisor):
    """CoTAP pretraining algorithm.

    Inputs come from :class:`CoTAPDataPreprocessor`: ``inputs['student']`` (photometrically
    augmented) and ``inputs['teacher']`` (clean) each hold ``2 subsets x 2 images x V crops``
    tensors (B, 3, S, S) at index ``subset * 2V + half * V + crop``: subset 0 = COCO, 1 = ImageNet;
    half 0 = the image u, 1 = its kNN neighbour v; crops = G globals then L locals. Data samples
    carry ``bbox_gc`` (2, 2, G, V, 4) and ``bbox_all`` (2, 2, V, G, 4) crop-overlap boxes.

    One step (docs/method.md §4.2): teacher on COCO globals (patch scores, foreground mask) and ImageNet
    globals (CLS scores); student on all crops, the ImageNet globals also filling the prototype
    bank; the bank's prototypes (the one-time k-means into the filters); Sinkhorn codes against
    the queues; the five losses; queue updates. The teacher's EMA update runs after the optimiser
    step in :class:`TeacherEMAHook`.

    Each part of :meth:`loss` runs inside ``torch.profiler.record_function`` with one of these
    names (a part may open its name more than once; the parts do not nest), so a profiler
    measures the step without touching the code: ``'cotap::teacher forward'``,
    ``'cotap::foreground mask'``, ``'cotap::student forward'``, ``'cotap::prototypes'`` (bank
    update, k-means, kernel load), ``'cotap::sinkhorn'`` (codes and their logged entropy),
    ``'cotap::inner patch loss'``, ``'cotap::cls losses'`` (inner and intra CLS),
    ``'cotap::ranking loss'`` (the correspondence head), ``'cotap::entropy loss'``,
    ``'cotap::queues'``.

    Args:
        backbone (dict): a ``CoTAPVisionTransformer`` config (``out_type`` is set to
            ``'oaf_raw'``). With ``with_oaf=False`` (the "w/o OAF" ablation, or an image-level
            init as in ``configs/demo/init_vit-tiny_synthetic.py``) the heads get the plain
            D-wide tokens (``'raw'``), and there is no prototype bank, k-means or entropy term
            (``loss_entropy`` is 0).
        patch_head, cls_head (dict): ``CoTAPProjectionHead`` configs (K = 512 and 4096).
        correspondence_head (dict): the CoTAP loss head (``CorrespondenceHead``).
        inner_patch_loss, inner_cls_loss, intra_cls_loss, entropy_loss (dict): loss configs.
        loss_weights (dict): weight per term of ``LOSS_TERMS``; all 1 by default.
        num_crops (tuple[int, int]): (G, L). Defaults to (2, 4).
        bank (dict): ``PrototypeBank`` arguments (embed_dims, num_prototypes and teacher_sync
            are filled in).
        queue_sizes (tuple[int, int]): global patch / CLS queue lengths, divided by the world
            size (docs/method.md §3.2). Defaults to (262144, 32768).
        queue_inserts (tuple[int, int]): rows inserted per step (patch: a random subset of the
            foreground rows; CLS: all rows the first time). Defaults to (2048, 100).
        sinkhorn_temperatures (tuple[float, float]): patch / CLS. Defaults to (0.05, 0.07).
        sinkhorn_iters (int): Defaults to 3.
        sinkhorn_scope (str): 'local' (released) or 'global'.
        fg_mass (float): attention mass kept by the foreground mask. Defaults to 0.6.
        teacher_momentum (tuple[float, float]): DINO-convention EMA momentum start/end.
        teacher_kernel_sync (bool): copy the k-means kernel into the teacher at once
            (docs/method.md §2.4b); False reproduces the released EMA-only lag. The bank's
            ``teacher_sync``.
        heads_warmup_iters (int): for this many first iterations the student backbone gets no
            gradient, so that the randomly initialised heads (and the OAF prototypes, trained by
            the entropy term) fit the init's features before they move it. 0 (default) as
            released. Under DDP set ``find_unused_parameters=True`` when it is > 0.
        teacher_momentum_steps (int, optional): length T of the momentum schedule; defaults to
            the run's ``max_iters + 5`` (released).
    """

    def __init__(self,
                 backbone: dict,
                 patch_head: dict,
                 cls_head: dict,
                 correspondence_head: dict = dict(type='CorrespondenceHead'),
                 inner_patch_loss: dict = dict(type='InnerPatchLoss'),
                 inner_cls_loss: dict = dict(type='InnerCLSLoss'),
                 intra_cls_loss: dict = dict(type='IntraCLSLoss'),
                 entropy_loss: dict = dict(type='EntropyMaxLoss'),
                 loss_weights: Optional[Dict[str, float]] = None,
                 num_crops: Sequence[int] = (2, 4),
                 bank: dict = dict(),
                 queue_sizes: Sequence[int] = (262144, 32768),
                 queue_inserts: Sequence[int] = (2048, 100),
                 sinkhorn_temperatures: Sequence[float] = (0.05, 0.07),
                 sinkhorn_iters: int = 3,
                 sinkhorn_scope: str = 'local',
                 fg_mass: float = 0.6,
                 teacher_momentum: Sequence[float] = (0.9997, 0.9999),
                 teacher_kernel_sync: bool = False,
                 heads_warmup_iters: int = 0,
                 teacher_momentum_steps: Optional[int] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        # tokens (B, 1+N, 2D) through the OAF; without it (the "w/o OAF" ablation, or an
        # image-level init as in the demo) the plain tokens (B, 1+N, D)
        backbone = dict(backbone, out_type='oaf_raw' if backbone.get('with_oaf', True) else 'raw')
        if data_preprocessor is None:
            data_preprocessor = dict(type='CoTAPDataPreprocessor')
        super().__init__(backbone=backbone, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if not hasattr(self.backbone, 'with_oaf'):
            raise ValueError('CoTAP: the backbone must be a CoTAPVisionTransformer')
        unknown = set(loss_weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f'CoTAP: unknown `loss_weights` keys {sorted(unknown)}; expected '
                             f'a subset of {LOSS_TERMS}')
        self.loss_weights = {name: 1.0 for name in LOSS_TERMS}
        self.loss_weights.update(loss_weights or {})
        self.patch_head = MODELS.build(patch_head)
        self.cls_head = MODELS.build(cls_head)
        self.num_global, self.num_local = (int(n) for n in num_crops)
        self.correspondence_head = MODELS.build(
            self._with_value(correspondence_head, 'num_crops', self.num_global,
                             'correspondence_head', 'num_crops[0]'))
        self.inner_patch_loss = MODELS.build(
            self._with_value(inner_patch_loss, 'patch_size', self.backbone.patch_size,
                             'inner_patch_loss', 'backbone.patch_size'))
        self.inner_cls_loss = MODELS.build(inner_cls_loss)
        self.intra_cls_loss = MODELS.build(intra_cls_loss)
        self.entropy_loss = MODELS.build(entropy_loss)
        # the prototype life cycle of the OAF (bank, k-means, kernel load): only with an OAF
        self.bank = MODELS.build(dict(
            dict(type='PrototypeBank', embed_dims=self.backbone.embed_dims,
                 num_prototypes=self.backbone.oaf.num_prototypes,
                 teacher_sync=teacher_kernel_sync),
            **bank)) if self.backbone.with_oaf else None
        world = get_world_size()
        self.patch_queue = FeatureQueue(max(1, queue_sizes[0] // world),
                                        self.patch_head.num_prototypes)
        self.cls_queue = FeatureQueue(max(1, queue_sizes[1] // world),
                                      self.cls_head.num_prototypes)
        self.queue_inserts = tuple(int(n) for n in queue_inserts)
        self.sinkhorn_temperatures = tuple(float(t) for t in sinkhorn_temperatures)
        self.sinkhorn_iters, self.sinkhorn_scope = sinkhorn_iters, sinkhorn_scope
        self.fg_mass = fg_mass
        if int(heads_warmup_iters) < 0:
            raise ValueError(f'CoTAP: `heads_warmup_iters` must be >= 0, got {heads_warmup_iters}')
        self.heads_warmup_iters = int(heads_warmup_iters)
        self.teacher = CoTAPTeacherEMA(self._student(), momentum=teacher_momentum,
                                       total_steps=teacher_momentum_steps)

    def init_weights(self) -> None:
        """Initialise the student; a missing init checkpoint fails here, at start-up."""
        init_cfg = getattr(self.backbone, 'init_cfg', None) or {}
        checkpoint = init_cfg.get('checkpoint') if isinstance(init_cfg, dict) else None
        if (checkpoint and '://' not in str(checkpoint)
                and not osp.isfile(osp.expanduser(str(checkpoint)))):
            raise FileNotFoundError(
                f'CoTAP: init checkpoint `model.backbone.init_cfg.checkpoint={checkpoint}` does not '
                'exist. Convert the DINO/iBOT/Mugs/Leopart release with `python '
                'tools/model_converters/convert.py --src-format {dino,ibot,mugs,leopart,timm} SRC '
                f'{checkpoint}` (docs/converters.md), or start from random weights with '
                '`--cfg-options model.backbone.init_cfg=None`.')
        super().init_weights()

    @staticmethod
    def _with_value(cfg: dict, key: str, value, component: str, source: str) -> dict:
        """``cfg`` with ``key`` set to the algorithm's ``value`` (``model.<source>``), refusing
        another one: the inner-patch loss divides crop boxes by the backbone's patch size, the
        correspondence head splits batches by the global-crop count; any other value would
        misalign them."""
        given = cfg.get(key)
        if given is not None and given != value:
            raise ValueError(
                f'CoTAP: `model.{component}.{key}={given}` differs from `model.{source}={value}`; '
                f'the {component} takes the latter, remove `{key}` from `{component}`')
        return dict(cfg, **{key: value})

    def _student(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            dict(backbone=self.backbone, patch_head=self.patch_head, cls_head=self.cls_head))

    def _student_backbone(self, x: Tensor, **kwargs):
        """The student backbone; without gradient during the heads' warm-up."""
        it = MessageHub.get_current_instance().get_info('iter') or 0
        if it < self.heads_warmup_iters:
            with torch.no_grad():
                return self.backbone(x, **kwargs)
        return self.backbone(x, **kwargs)

    @torch.no_grad()
    def update_teacher(self) -> None:
        """EMA step of the teacher (called by ``TeacherEMAHook``)."""
        self.teacher.update_parameters(self._student())

    # -- layout helpers ------------------------------------------------------------------------

    def _crops(self, views: List[Tensor], subset: int, kind: str) -> Tensor:
        """[u crops..., v crops...] of one subset: (2 n B, 3, S, S), n crops each."""
        return select_crops(views, (self.num_global, self.num_local), (2 * subset, 2 * subset + 1),
                            kind)

    def _maps(self, tokens: Tensor, head: nn.Module, crops: Tensor) -> Tensor:
        """Patch-head scores of the (n, 1+N, C) tokens of ``crops`` as (n, K, h, w) maps."""
        grid = [-(-size // self.backbone.patch_size) for size in crops.shape[-2:]]  # padded
        return tokens_to_map(head(tokens[:, 1:]), grid)

    def _boxes(self, data_samples: List[DataSample], key: str) -> Tensor:
        """COCO crop boxes per image (2B, ...) with [u's; v's], from each sample's ``key``."""
        boxes = torch.stack([torch.as_tensor(s.get(key)) for s in data_samples])[:, 0]
        return boxes.transpose(0, 1).flatten(0, 1).float()  # (B, 2, ...) -> (2B, ...)

    # -- the step ------------------------------------------------------------------------------

    def loss(self, inputs: Dict[str, List[Tensor]], data_samples: List[DataSample],
             **kwargs) -> Dict[str, Tensor]:
        student_in, teacher_in = inputs['student'], inputs['teacher']
        check_num_crops((self.num_global, self.num_local), len(student_in))
        teacher = self.teacher.module
        with torch.no_grad():
            with record_function('cotap::teacher forward'):
                crops = self._crops(teacher_in, 0, 'global')
                tokens, extras = teacher.backbone(crops, return_attn=True)
                t_patch = self._maps(tokens[0], teacher.patch_head, crops)  # (2GB, K, h, w)
            with record_function('cotap::foreground mask'):
                fg_mask = attention_foreground_mask(extras['attn'], t_patch.shape[-2:],
                                                    mass=self.fg_mass)  # (2GB, 1, h, w)
            with record_function('cotap::teacher forward'):
                t_cls = teacher.cls_head(teacher.backbone(self._crops(teacher_in, 1,
                                                                      'global'))[0][:, 0])

        student = self._student_backbone
        with record_function('cotap::student forward'):
            crops = self._crops(student_in, 0, 'global')
            s_patch = self._maps(student(crops)[0], self.patch_head, crops)
            tokens, extras = student(self._crops(student_in, 1, 'global'),
                                     return_block_input=True)
            s_cls = self.cls_head(tokens[0][:, 0])
        if self.bank is not None:
            with record_function('cotap::prototypes'):
                self.bank.update(extras['block_input'])
        s_patch_local = s_cls_local = None
        if self.num_local:
            with record_function('cotap::student forward'):
                crops = self._crops(student_in, 0, 'local')
                s_patch_local = self._maps(student(crops)[0], self.patch_head, crops)
                s_cls_local = self.cls_head(student(self._crops(student_in, 1,
                                                                'local'))[0][:, 0])

        # a diverged model: stop here, before the losses fail on NaN inputs without context
        self._check_finite('output', dict(teacher_patch_scores=t_patch, teacher_cls_scores=t_cls,
                                          student_patch_scores=s_patch,
                                          student_cls_scores=s_cls))
        if self.bank is not None:
            with record_function('cotap::prototypes'):
                kernel, bank_samples = self.bank.prototypes(self.backbone.oaf,
                                                            teacher.backbone.oaf)

        losses = {}
        t_rows = t_patch.permute(0, 2, 3, 1).reshape(-1, t_patch.shape[1])
        if self.patch_queue.is_empty or self.cls_queue.is_empty:
            # first step: no codes yet, as released (docs/method.md §3.2); zero losses keep the graph
            zero = 0 * (s_patch.mean() + s_cls.mean())
            losses.update(inner_patch=zero, inner_cls=zero, intra_cls=zero)
        else:
            losses.update(self._code_losses(t_patch, t_rows, t_cls, s_patch, s_patch_local,
                                            s_cls, s_cls_local, fg_mask, data_samples))
        with record_function('cotap::ranking loss'):
            losses['cotap'] = self.correspondence_head.loss(s_patch, t_patch, fg_mask)
        with record_function('cotap::entropy loss'):
            losses['entropy'] = (s_cls.new_zeros(()) if self.bank is None else
                                 self.entropy_loss(kernel, bank_samples))

        with record_function('cotap::queues'):
            self.patch_queue.push(t_rows[fg_mask.flatten() > 0],
                                  max_insert=self.queue_inserts[0])
            self.cls_queue.push(t_cls, max_insert=None if self.cls_queue.is_empty else
                                self.queue_inserts[1])
        return self._weighted(losses)

    def _code_losses(self, t_patch, t_rows, t_cls, s_patch, s_patch_local, s_cls, s_cls_local,
                     fg_mask, data_samples) -> Dict[str, Tensor]:
        G, L = self.num_global, self.num_local
        t_patch_temp, t_cls_temp = self.sinkhorn_temperatures
        with record_function('cotap::sinkhorn'):
            codes = sinkhorn_knopp(torch.cat([self.patch_queue.rows, t_rows]), t_patch_temp,
                                   self.sinkhorn_iters, self.sinkhorn_scope)[-t_rows.shape[0]:]
            codes = tokens_to_map(codes.view(t_patch.shape[0], -1, codes.shape[-1]),
                                  t_patch.shape[2:])
            cls_codes = sinkhorn_knopp(torch.cat([self.cls_queue.rows, t_cls]), t_cls_temp,
                                       self.sinkhorn_iters, self.sinkhorn_scope)[-t_cls.shape[0]:]
            # logged, not optimised: codes near log K (uniform) mean the code losses teach nothing
            entropies = torch.stack([code_entropy(codes.movedim(1, -1)), code_entropy(cls_codes)])
            patch_entropy, cls_entropy = entropies.tolist()  # one device sync for both
        hub = MessageHub.get_current_instance()
        hub.update_scalar('train/code_entropy_patch', patch_entropy)
        hub.update_scalar('train/code_entropy_cls', cls_entropy)
        with record_function('cotap::inner patch loss'):
            inner_patch = self.inner_patch_loss(
                per_crop(codes, G), per_crop(s_patch, G),
                None if s_patch_local is None else per_crop(s_patch_local, L),
                self._boxes(data_samples, 'bbox_gc'), self._boxes(data_samples, 'bbox_all'),
                per_crop(fg_mask, G))
        with record_function('cotap::cls losses'):
            cls_codes = per_crop(cls_codes, G)  # (G, 2B, K)
            s_cls_all = per_crop(s_cls, G)
            if s_cls_local is not None:
                s_cls_all = torch.cat([s_cls_all, per_crop(s_cls_local, L)])
            return dict(inner_patch=inner_patch,
                        inner_cls=self.inner_cls_loss(cls_codes, s_cls_all),
                        intra_cls=self.intra_cls_loss(cls_codes, per_crop(s_cls, G)))

    def _check_finite(self, what: str, tensors: Dict[str, Tensor]) -> None:
        """Stop on a non-finite tensor, naming it and the iteration (one sync for all).

        The model's one finite check (the losses and heads do not repeat it): it runs on the
        network outputs and on the loss terms. Raised inside the forward pass, so the optimiser
        step and ``CheckpointHook`` never see this iteration: the checkpoints on disk all come
        from finite steps.
        """
        finite = torch.stack([torch.isfinite(t.detach()).all() for t in tensors.values()])
        if bool(finite.all()):
            return
        name = list(tensors)[int((~finite).nonzero()[0])]
        value = tensors[name].detach()
        shown = value.item() if value.numel() == 1 else 'not finite'
        hub = MessageHub.get_current_instance()
        it, total = hub.get_info('iter'), hub.get_info('max_iters')
        log = '' if it is None else f' (the log\'s Iter(train) [{it + 1}/{total}])'
        raise FloatingPointError(
            f'CoTAP: {what} `{name}` is {shown} at iteration {it}{log}; stopping, nothing of '
            'this iteration was saved. Check the learning rate (optim_wrapper.optimizer.lr), '
            'the AMP loss scale and the input data, then resume from the last checkpoint with '
            '`tools/train.py CONFIG --resume`.')

    def _weighted(self, losses: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Weight the terms and stop on a non-finite one, naming it and the iteration."""
        self._check_finite('loss term', {name: losses[name] for name in LOSS_TERMS})
        return {f'loss_{name}': self.loss_weights[name] * losses[name] for name in LOSS_TERMS}
