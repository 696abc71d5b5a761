"""Released checkpoints -> ``CoTAPVisionTransformer`` checkpoints (``convert.py``): the network
is picked by its layout (:mod:`cotap_mm.utils.checkpoint_layout`), its keys are renamed by the
key table of its source (:data:`CONVERTERS`), the result is checked and described by
:func:`.backbone.backbone_checkpoint`. A new source layout is one module with its key table and
``convert()``, one entry here and its prefixes and detection in ``checkpoint_layout``."""
import os.path as osp

import torch

from cotap_mm.utils.checkpoint_layout import (DEFAULT_WHICH, SRC_FORMATS, layout_hint,
                                              network_state, select_network)
from cotap_mm.utils.checkpoint_loading import (CheckpointConversionError, first_keys,
                                               is_tensor_dict, load_source)
from . import dino, dinov2, dinov3
from .backbone import backbone_checkpoint

__all__ = ['CONVERTERS', 'convert_state_dict', 'convert_checkpoint']

# --src-format -> convert(state, src_format, keep_final_norm, path): (state, dropped, unmatched)
CONVERTERS = {**dict.fromkeys(dino.FORMATS, dino.convert), 'dinov2': dinov2.convert,
              'dinov3': dinov3.convert}


def _check_format(src_format, which):
    if src_format not in CONVERTERS:
        raise CheckpointConversionError(
            f'unknown --src-format {src_format!r}; choose one of {list(SRC_FORMATS)}')
    if which not in (None, 'student', 'teacher'):
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')


def convert_state_dict(state_dict, src_format, which=None, arch=None, num_heads=None,
                       keep_final_norm=False, path='<state_dict>', container=None):
    """Convert one network's flat state dict into ``backbone.*`` CoTAPVisionTransformer keys.

    Args:
        state_dict (dict[str, Tensor]): The (possibly prefixed) source state dict.
        src_format (str): One of :data:`SRC_FORMATS`.
        which (str, optional): ``'student'`` / ``'teacher'``: picks the prefix of Lightning
            checkpoints (Leopart, official CoTAP). Defaults to :data:`DEFAULT_WHICH`.
        arch (str | dict, optional): Target arch; by default inferred from the shapes.
        num_heads (int, optional): Number of heads when it cannot be inferred.
        keep_final_norm (bool): Keep the source's final ``norm.*`` as ``ln1.*`` (to load into a
            ``final_norm=True`` backbone). Defaults to False (dropped, as CoTAP does).
        path (str): Source name for messages.
        container (str, optional): Where in the file the state dict was found (for meta).

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    _check_format(src_format, which)
    which = DEFAULT_WHICH[src_format] if which is None else which
    if not is_tensor_dict(state_dict):
        bad = [k for k, v in state_dict.items() if not torch.is_tensor(v)] if isinstance(
            state_dict, dict) else []
        raise CheckpointConversionError(
            f'{path}: expected a dict of tensors for the {src_format} backbone, got '
            f'{type(state_dict).__name__}' + (f' with non-tensor entries {first_keys(bad)}' if bad
                                              else '') + f'. {layout_hint(state_dict)}')
    root, sub, outside = network_state(state_dict, src_format, which, path)
    state, dropped, unmatched = CONVERTERS[src_format](sub, src_format, keep_final_norm, path)
    if unmatched:
        raise CheckpointConversionError(
            f'{path}: {len(unmatched)} key(s) of the {src_format} backbone (prefix {root!r}) '
            f'match no conversion rule: {first_keys(unmatched)}. {layout_hint(state_dict)} If the '
            'layout is right, the model has parts the converter does not know (SwiGLU MLPs, '
            'rotary embeddings, ...): CoTAPVisionTransformer cannot hold them.')
    source = dict(file=osp.abspath(path) if osp.exists(str(path)) else str(path),
                  format=src_format, which=which, container=container, prefix=root,
                  num_keys=len(state_dict))
    return backbone_checkpoint(
        state, converter='cotap_mm tools/model_converters/convert.py', source=source,
        dropped=dropped, outside=outside, final_norm=keep_final_norm, path=path, arch=arch,
        num_heads=num_heads)


def convert_checkpoint(src, src_format, which=None, arch=None, num_heads=None,
                       keep_final_norm=False, unsafe_pickle=False):
    """Load ``src`` (safely unless ``unsafe_pickle``: :func:`load_source`) and convert the
    network ``which`` (None: :data:`DEFAULT_WHICH`) as :func:`convert_state_dict` does."""
    _check_format(src_format, which)
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    explicit, which = which is not None, DEFAULT_WHICH[src_format] if which is None else which
    sd, container = select_network(obj, src_format, which, explicit, src)
    ckpt = convert_state_dict(sd, src_format, which=which, arch=arch, num_heads=num_heads,
                              keep_final_norm=keep_final_norm, path=src, container=container)
    ckpt['meta']['source'].update(loaded_with=how, which_default=not explicit)
    return ckpt
