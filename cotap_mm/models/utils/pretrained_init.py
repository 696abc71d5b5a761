"""A strict ``Pretrained`` weight initializer that names the converter to run on a raw file."""
import logging

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError, first_keys
from .loading import BackboneWeightsError, load_backbone_weights, read_checkpoint

__all__ = ['CoTAPPretrained']


@WEIGHT_INITIALIZERS.register_module(name='CoTAPPretrained')
class CoTAPPretrained(PretrainedInit):
    """Load a pretrained checkpoint like mmengine's ``Pretrained``, but strictly.

    ``init_cfg=dict(type='CoTAPPretrained', checkpoint=..., prefix='backbone.')`` loads like
    ``type='Pretrained'`` (same arguments) and raises :class:`BackboneWeightsError` instead of
    logging a warning when

    - the checkpoint has keys the module does not have (unexpected keys);
    - the module has keys the checkpoint lacks, other than those starting with one of
      ``allow_missing`` (default ``('oaf.',)``: a DINO/iBOT/Mugs/Leopart backbone has no
      object-aware filter, which then keeps its own initialisation; these keys are logged);
    - a tensor has another shape. ``pos_embed`` is exempt on modules that resize it on load
      (mmpretrain ``VisionTransformer`` registers ``_prepare_pos_embed`` as a load hook, which
      interpolates the checkpoint's grid to the module's ``img_size``).

    This is the policy of :func:`~cotap_mm.models.utils.loading.load_backbone_weights`, which
    does the loading; the file is read with ``torch.load(weights_only=True)``.

    When the file looks like an unconverted release (DINO, iBOT, Mugs, Leopart, timm, official
    CoTAP) or a checkpoint of our own CoTAP pretraining, the message gives the exact
    ``tools/model_converters`` command to run.

    Order of initialisation: mmengine's ``BaseModule.init_weights`` runs ``type='Pretrained'``
    *after* the children's ``init_weights``, but any other type (this one) *before*. So after
    loading, every sub-module whose parameters all came from the checkpoint is marked initialised
    (children's ``init_weights`` would otherwise re-initialise e.g. the FFNs), and the module's
    ``init_cfg`` is rewritten to ``type='Pretrained'`` so that mmpretrain's
    ``VisionTransformer.init_weights``, which re-draws ``pos_embed`` unless its ``init_cfg``
    says ``'Pretrained'``, keeps the loaded one. Use it alone as the module's ``init_cfg``.

    Args:
        checkpoint (str): Checkpoint file or URL (anything mmengine's ``CheckpointLoader``
            reads).
        prefix (str, optional): Only load keys starting with it (stripped), e.g.
            ``'backbone.'``. Defaults to None (the whole state dict).
        map_location (str): Defaults to ``'cpu'``.
        allow_missing (Sequence[str]): Key prefixes of the module that may be absent from the
            checkpoint. Defaults to ``('oaf.',)``.
    """

    def __init__(self, checkpoint, prefix=None, map_location='cpu', allow_missing=('oaf.', )):
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        if isinstance(allow_missing, str):
            allow_missing = (allow_missing, )
        self.allow_missing = tuple(allow_missing or ())

    def _read(self):
        try:
            return read_checkpoint(self.checkpoint)
        except CheckpointConversionError as e:
            if '--unsafe-pickle' not in str(e):
                raise BackboneWeightsError(f'CoTAPPretrained: {e}') from e
            raise BackboneWeightsError(
                f'CoTAPPretrained: torch.load(weights_only=True) refused {self.checkpoint} '
                '(it pickles non-tensor Python objects). Lightning .ckpt releases (Leopart, '
                'official CoTAP) must be converted first, e.g.\n    python '
                'tools/model_converters/convert.py --src-format cotap-official '
                f'--unsafe-pickle {self.checkpoint} <converted>.pth\n(or --src-format '
                'leopart); --unsafe-pickle only for files you trust.') from e

    @staticmethod
    def _mark_loaded(module, loaded_keys):
        """Mark sub-modules whose parameters/buffers all came from the checkpoint initialised,
        so that their ``init_weights`` (run after this initializer) keeps the loaded values."""
        for name, sub in module.named_modules():
            if sub is module or not isinstance(sub, BaseModule):
                continue
            keys = [f'{name}.{k}' for k in sub.state_dict()]
            if keys and all(k in loaded_keys for k in keys):
                sub._is_init = True

    def __call__(self, module):
        print_log(f'CoTAPPretrained: load {self.prefix or "all keys"} of {self.checkpoint} into '
                  f'{type(module).__name__}', logger='current')
        ckpt = self._read()
        try:
            info = load_backbone_weights(module, self.checkpoint, prefix=self.prefix or '',
                                         allow_missing=self.allow_missing, ckpt=ckpt)
        except BackboneWeightsError as e:
            raise BackboneWeightsError(f'CoTAPPretrained (prefix={self.prefix!r}): {e}') from e
        allowed = info['allowed_missing']
        if allowed:
            print_log(f'CoTAPPretrained: {len(allowed)} key(s) not in the checkpoint keep their '
                      f'own initialisation (allow_missing={self.allow_missing}): '
                      f'{first_keys(allowed)}', logger='current', level=logging.WARNING)
        own = set(module.state_dict())
        self._mark_loaded(module, own - set(info['allowed_missing']))
        if isinstance(getattr(module, 'init_cfg', None), dict):
            # see the class docstring: mmpretrain's VisionTransformer re-draws pos_embed unless
            # its init_cfg type is 'Pretrained'
            module.init_cfg = dict(module.init_cfg, type='Pretrained')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
