"""The student or EMA-teacher backbone of a checkpoint of our own CoTAP pretraining
(:class:`~cotap_mm.models.algorithms.CoTAP`) as a ``backbone.*`` checkpoint
(``extract_backbone.py``). Its keys are ours already: the layout is only where each network
is (``checkpoint_layout.NETWORK_PREFIXES``)."""
import os.path as osp

from cotap_mm.utils.checkpoint_layout import layout_hint, network_state
from cotap_mm.utils.checkpoint_loading import (CheckpointConversionError, flat_state_dict,
                                               is_tensor_dict, load_source)
from .backbone import backbone_checkpoint

__all__ = ['extract_backbone']


def extract_backbone(src, which='student', num_heads=None, unsafe_pickle=False,
                     drop_final_norm=False):
    """Backbone of a cotap_mm CoTAP pretraining checkpoint as a ``backbone.*`` checkpoint.

    The CoTAP algorithm (``cotap_mm/models/algorithms/cotap.py``) keeps the student backbone
    under ``backbone.*`` and the EMA teacher (a ``CoTAPTeacherEMA`` over
    ``ModuleDict(backbone, patch_head, cls_head)``) under ``teacher.module.backbone.*``; heads,
    queues, the prototype bank and the teacher's ``steps`` are dropped.

    Args:
        src (str): Checkpoint saved by the Runner (``{'meta', 'state_dict', ...}``).
        which (str): ``'student'`` (default: what the official evaluation uses,
            docs/method.md §6.1) or ``'teacher'``.
        num_heads (int, optional): Recorded in meta when it cannot be inferred.
        unsafe_pickle (bool): See :func:`load_source`.
        drop_final_norm (bool): Drop the final LayerNorm (``ln1.*``) of a backbone trained with
            ``final_norm=True`` (e.g. the demo's DINO-like init), as CoTAP drops DINO's final
            norm (docs/method.md §2.1); it is listed under ``meta['dropped']``.

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    sd = flat_state_dict(obj)
    if not is_tensor_dict(sd):
        raise CheckpointConversionError(
            f'{src}: expected an mmengine checkpoint with a `state_dict` of tensors. '
            f'{layout_hint(obj)}')
    root, state, outside = network_state(sd, 'cotap-mm', which, src)
    dropped = {}
    if drop_final_norm:
        dropped['final norm (--drop-final-norm)'] = [k for k in state if k.startswith('ln1.')]
        state = {k: v for k, v in state.items() if not k.startswith('ln1.')}
    run_meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else {}
    source = dict(file=osp.abspath(src), format='cotap-mm', which=which, prefix=root,
                  loaded_with=how, num_keys=len(sd), epoch=run_meta.get('epoch'),
                  iter=run_meta.get('iter'))
    return backbone_checkpoint(
        state, converter='cotap_mm tools/model_converters/extract_backbone.py', source=source,
        dropped=dropped, outside=outside, final_norm='ln1.weight' in state, path=src,
        num_heads=num_heads)
