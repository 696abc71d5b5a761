"""DINOv2 and DINOv2 with registers -> ``CoTAPVisionTransformer``, from the torch.hub layout or
timm's: the DINO key table (:mod:`.dino`) plus::

    blocks.i.ls1.gamma / ls2.gamma            -> layers.i.attn.gamma1.weight / ffn.gamma2.weight
    register_tokens (torch.hub)               -> register_tokens
    reg_token + pos_embed without a CLS position (timm, ``no_embed_class``)
                                              -> register_tokens + pos_embed with a zero CLS
                                                 position (timm folded it into cls_token)
    mask_token                                -> dropped (masked image modelling only)
"""
import math

import torch

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from . import dino
from .backbone import rename

__all__ = ['KEYS', 'convert']

LAYER_SCALE = (('blocks.{i}.ls1.gamma', 'layers.{i}.attn.gamma1.weight'),
               ('blocks.{i}.ls2.gamma', 'layers.{i}.ffn.gamma2.weight'))
KEYS = dino.KEYS + LAYER_SCALE + (('register_tokens', 'register_tokens'), )
DROPS = ((r'^mask_token$', 'DINOv2 mask token (used only for masked image modelling)'),
         (r'^fc_norm\.', 'timm classifier pooling norm'), dino.HEAD, dino.FINAL_NORM_DROP)


def convert(state, src_format='dinov2', keep_final_norm=False, path='checkpoint'):
    """One network's keys renamed to ``CoTAPVisionTransformer``'s (see :func:`.dino.convert`)."""
    if 'reg_token' in state:  # timm's registers: the CLS position is folded into cls_token
        pos = state['pos_embed']
        if math.isqrt(pos.shape[1])**2 != pos.shape[1]:
            raise CheckpointConversionError(
                f'{path}: reg_token with pos_embed {tuple(pos.shape)}; expected timm\'s '
                'no_embed_class layout (a square grid of patch positions, no CLS position)')
        state = dict(state, register_tokens=state['reg_token'],
                     pos_embed=torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1))
        del state['reg_token']
    return rename(state, KEYS + ((dino.FINAL_NORM, ) if keep_final_norm else ()), DROPS)
