"""A strict ``Pretrained`` weight initializer that names the converter to run on a raw file."""
import logging

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS

from cotap_mm.utils.checkpoint_conversion import detect_layout, suggest_command

__all__ = ['CoTAPPretrained', 'PretrainedLoadError']

_FIRST = 8


class PretrainedLoadError(RuntimeError):
    """The checkpoint does not fit the module; the message lists what and how to fix it."""


def _first(keys):
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:_FIRST])
    return f'[{shown}{", ..." if len(keys) > _FIRST else ""}] ({len(keys)} in total)'


@WEIGHT_INITIALIZERS.register_module(name='CoTAPPretrained')
class CoTAPPretrained(PretrainedInit):
    """Load a pretrained checkpoint like mmengine's ``Pretrained``, but strictly.

    ``init_cfg=dict(type='CoTAPPretrained', checkpoint=..., prefix='backbone.')`` loads like
    ``type='Pretrained'`` (same arguments) and raises :class:`PretrainedLoadError` instead of
    logging a warning when

    - the checkpoint has keys the module does not have (unexpected keys);
    - the module has keys the checkpoint lacks, other than those starting with one of
      ``allow_missing`` (default ``('oaf.',)``: a DINO/iBOT/Mugs/Leopart backbone has no
      object-aware filter, which then keeps its own initialisation; these keys are logged);
    - a tensor has another shape. ``pos_embed`` is exempt on modules that resize it on load
      (mmpretrain ``VisionTransformer`` registers ``_prepare_pos_embed`` as a load hook, which
      interpolates the checkpoint's grid to the module's ``img_size``).

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

    # -- helpers -------------------------------------------------------------------------------

    def _convert_hint(self, checkpoint):
        layout = detect_layout(checkpoint)
        cmd = suggest_command(layout, src=self.checkpoint, dst='<converted>.pth')
        if cmd is None:
            return ''
        return (f' The file looks like: {layout["description"]}; convert it first:\n    {cmd}\n'
                f"and set checkpoint='<converted>.pth', prefix='backbone.'.")

    def _load(self):
        from mmengine.runner.checkpoint import _load_checkpoint
        try:
            checkpoint = _load_checkpoint(self.checkpoint, map_location=self.map_location)
        except Exception as e:  # noqa: BLE001
            text = str(e)
            if 'weights only' in text.lower() or 'weights_only' in text:
                raise PretrainedLoadError(
                    f'CoTAPPretrained: torch.load(weights_only=True) refused {self.checkpoint} '
                    '(it pickles non-tensor Python objects). Lightning .ckpt releases (Leopart, '
                    'official CoTAP) must be converted first, e.g.\n    python '
                    'tools/model_converters/convert.py --src-format cotap-official '
                    f'--unsafe-pickle {self.checkpoint} <converted>.pth\n(or --src-format '
                    'leopart); --unsafe-pickle only for files you trust.') from e
            raise
        if not isinstance(checkpoint, dict):
            raise PretrainedLoadError(
                f'CoTAPPretrained: {self.checkpoint} holds a {type(checkpoint).__name__}, not a '
                'state dict / checkpoint dict')
        return checkpoint

    def _state_dict(self, checkpoint):
        state_dict = checkpoint.get('state_dict', checkpoint)
        if not isinstance(state_dict, dict):
            raise PretrainedLoadError(
                f'CoTAPPretrained: `state_dict` of {self.checkpoint} is a '
                f'{type(state_dict).__name__}, not a dict.{self._convert_hint(checkpoint)}')
        if self.prefix is None:
            return dict(state_dict)
        prefix = self.prefix if self.prefix.endswith('.') else self.prefix + '.'
        out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not out:
            raise PretrainedLoadError(
                f'CoTAPPretrained: no key of {self.checkpoint} starts with prefix={prefix!r}; '
                f'its keys are {_first(state_dict)}.{self._convert_hint(checkpoint)}')
        return out

    def _check(self, module, state_dict, checkpoint):
        own = module.state_dict()
        resizes_pos_embed = hasattr(module, '_prepare_pos_embed')
        unexpected = [k for k in state_dict if k not in own]
        missing = [k for k in own if k not in state_dict]
        allowed = [k for k in missing if k.startswith(self.allow_missing)]
        missing = [k for k in missing if not k.startswith(self.allow_missing)]
        mismatched = []
        for k, v in state_dict.items():
            if k not in own or not torch.is_tensor(v) or v.shape == own[k].shape:
                continue
            if (k == 'pos_embed' and resizes_pos_embed and v.dim() == 3
                    and v.shape[-1] == own[k].shape[-1]):
                continue  # resized to the module's grid by the load hook
            mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        if unexpected or missing or mismatched:
            lines = [f'CoTAPPretrained: {self.checkpoint} (prefix={self.prefix!r}) does not fit '
                     f'{type(module).__name__}:']
            if unexpected:
                lines.append(f'  unexpected keys: {_first(unexpected)}')
            if missing:
                lines.append(f'  missing keys (not under allow_missing={self.allow_missing}): '
                             f'{_first(missing)}')
            if mismatched:
                shown = '; '.join(f'{k}: checkpoint {s} vs model {m}'
                                  for k, s, m in mismatched[:_FIRST])
                lines.append(f'  shape mismatches ({len(mismatched)}): {shown}')
            hint = self._convert_hint(checkpoint)
            if hint:
                lines.append(hint.strip())
            elif mismatched:
                lines.append('  (another model size? check arch / patch_size against the '
                             "checkpoint's meta['arch'])")
            raise PretrainedLoadError('\n'.join(lines))
        return allowed

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

    # -- entry point ---------------------------------------------------------------------------

    def __call__(self, module):
        print_log(f'CoTAPPretrained: load {self.prefix or "all keys"} of {self.checkpoint} into '
                  f'{type(module).__name__}', logger='current')
        checkpoint = self._load()
        state_dict = self._state_dict(checkpoint)
        allowed = self._check(module, state_dict, checkpoint)
        result = module.load_state_dict(state_dict, strict=False)
        # the pre-check above covers everything load_state_dict can report; re-check anyway
        # in case a load hook renamed keys
        still_missing = [k for k in result.missing_keys if not k.startswith(self.allow_missing)]
        if result.unexpected_keys or still_missing:
            raise PretrainedLoadError(
                f'CoTAPPretrained: loading {self.checkpoint} left unexpected keys '
                f'{_first(result.unexpected_keys)} and missing keys {_first(still_missing)}')
        if allowed:
            print_log(f'CoTAPPretrained: {len(allowed)} key(s) not in the checkpoint keep their '
                      f'own initialisation (allow_missing={self.allow_missing}): '
                      f'{_first(allowed)}', logger='current', level=logging.WARNING)
        self._mark_loaded(module, set(state_dict))
        if isinstance(getattr(module, 'init_cfg', None), dict):
            # see the class docstring: mmpretrain's VisionTransformer re-draws pos_embed unless
            # its init_cfg type is 'Pretrained'
            module.init_cfg = dict(module.init_cfg, type='Pretrained')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())
