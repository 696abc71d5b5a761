"""mmengine's default parameter grouping, with the no-decay rules kept inside ``custom_keys``."""
from typing import List, Optional, Union

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch.nn import GroupNorm, LayerNorm
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ['NoDecayOneDimOptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NoDecayOneDimOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` whose ``norm_decay_mult``, ``bias_decay_mult`` and
    ``flat_decay_mult`` also apply to parameters matched by ``custom_keys``.

    mmengine gives a parameter matched by a custom key that key's ``decay_mult`` (1 if unset) and
    skips the norm/bias/1-D rules, so ``custom_keys={'patch_head': dict(lr_mult=10.)}`` would
    weight-decay the heads' biases. CoTAP's released optimiser excludes every bias and 1-D
    parameter from decay, heads included (docs/training.md). Here a custom key's explicit
    ``decay_mult`` still wins; without one, the norm/bias/1-D rules decide, as for every other
    parameter.

    Use it with ``optim_wrapper = dict(constructor='NoDecayOneDimOptimWrapperConstructor', ...)``.
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        start = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if self.base_wd is None:
            return
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        # the key mmengine matched: longest first, alphabetical among equals
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
        is_norm = isinstance(module, (_BatchNorm, _InstanceNorm, GroupNorm, LayerNorm))
        own = {id(p): name for name, p in module.named_parameters(recurse=False)}
        for group in params[start:]:
            param = group['params'][0]
            name = own.get(id(param))
            if name is None:  # a child's parameter: its own call has handled it
                continue
            key = next((k for k in sorted_keys if k in f'{prefix}.{name}'), None)
            if key is None or 'decay_mult' in custom_keys[key]:
                continue
            mult = self._no_decay_mult(name, param, is_norm)
            if mult is not None:
                group['weight_decay'] = self.base_wd * mult

    def _no_decay_mult(self, name: str, param: nn.Parameter, is_norm: bool) -> Optional[float]:
        """The decay multiplier mmengine's rules give this parameter outside ``custom_keys``."""
        cfg = self.paramwise_cfg
        if is_norm and cfg.get('norm_decay_mult') is not None:
            return cfg['norm_decay_mult']
        if name == 'bias' and cfg.get('bias_decay_mult') is not None:
            return cfg['bias_decay_mult']
        if param.ndim == 1 and cfg.get('flat_decay_mult') is not None:
            return cfg['flat_decay_mult']
        return None
