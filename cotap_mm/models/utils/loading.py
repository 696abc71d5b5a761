"""One way to get a backbone and its weights.

- :func:`build_backbone`: the backbone of any OpenMMLab config (``model.backbone``, or ``model``
  itself), built without its ``init_cfg`` for a checkpoint to be loaded into it;
  :func:`get_normalization`: the mean/std its images are normalised with.
- :func:`load_backbone_weights`: read a checkpoint (safely: ``weights_only`` unless the caller
  opts in), select one network's backbone keys and load them **strictly**. This is the policy
  of every loader in the package (:class:`CoTAPPretrained`, the probes, the kNN files, the
  pictures):

  - the keys: ``prefix`` if given, else the network ``which`` (``'student'``: ``backbone.*``,
    ``'teacher'``: ``teacher.module.backbone.*`` of a CoTAP checkpoint); a bare backbone state
    dict (no prefix at all) is taken whole for the student;
  - missing, unexpected and shape-mismatched keys raise :class:`BackboneWeightsError`, listed,
    with the converter command when the file is an unconverted release;
  - exceptions: keys under ``allow_missing`` (e.g. ``('oaf.',)``: a DINO backbone has no
    object-aware filter, which then keeps its own initialisation) may be absent; the
    checkpoint's ``oaf.*`` keys are dropped, with a warning, when the module has no filter
    (``with_oaf=False``: the plain ViT of an OAF checkpoint); ``pos_embed`` of another grid is
    accepted by modules that resize it on load (mmpretrain's ``_prepare_pos_embed`` hook).
"""
import logging
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import torch

from cotap_mm.utils.checkpoint_layout import NETWORK_PREFIXES, detect_layout, suggest_command
from cotap_mm.utils.checkpoint_loading import first_keys, load_source, mismatch_lines
from cotap_mm.utils.images import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    'BackboneWeightsError', 'load_config', 'backbone_cfg', 'build_backbone',
    'get_normalization', 'read_checkpoint', 'select_backbone_state', 'check_backbone_state',
    'load_backbone_weights', 'load_checkpoint_backbone'
]


class BackboneWeightsError(KeyError):
    """A checkpoint does not fit the backbone; the message lists what and how to fix it."""

    def __str__(self):  # KeyError would show the repr, with escaped newlines
        return str(self.args[0]) if self.args else ''


def _log(logger, msg, level=logging.INFO):
    from mmengine.logging import print_log
    print_log(msg, logger=logger if logger is not None else 'current', level=level)


# -- building -------------------------------------------------------------------------------


def load_config(config, cfg_options: Optional[dict] = None):
    """``config`` (a path or a loaded ``Config``) with ``cfg_options`` merged; it must have a
    ``model`` dict."""
    from mmengine.config import Config
    if isinstance(config, Config):
        cfg = config
    else:
        if not osp.isfile(config):
            raise FileNotFoundError(f'CONFIG {config!r} does not exist')
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'CONFIG {getattr(cfg, "filename", config)!r} has no `model` dict; give a '
                       f"config with `model = dict(type='CoTAPVisionTransformer', ...)` or "
                       f'`model = dict(..., backbone=dict(...))`')
    return cfg


def backbone_cfg(cfg) -> dict:
    """The backbone dict of a loaded config: ``model.backbone`` if there is one, else ``model``."""
    model_cfg = cfg.model
    bb_cfg = model_cfg.get('backbone', model_cfg)
    return dict(bb_cfg.to_dict() if hasattr(bb_cfg, 'to_dict') else bb_cfg)


def build_backbone(config,
                   cfg_options: Optional[dict] = None,
                   out_type: str = 'cls_token',
                   overrides: Optional[dict] = None):
    """Build the backbone of ``config`` in eval mode, without its ``init_cfg`` (the weights come
    from :func:`load_backbone_weights`).

    Args:
        config (str | Config): Path of a python config, or a loaded ``Config``.
        cfg_options (dict, optional): ``--cfg-options`` to merge first.
        out_type (str): ``'cls_token'`` (B, C), ``'featmap'`` (B, C, H/p, W/p) or ``'raw'``.
        overrides (dict, optional): Entries set on the backbone dict last, whatever the config
            layout (e.g. ``dict(with_oaf=False)`` for a checkpoint without the filter).

    Returns:
        tuple[nn.Module, Config]: The backbone (its last layer's output only) and the config.
    """
    from mmengine.registry import DefaultScope

    from cotap_mm.registry import MODELS
    cfg = load_config(config, cfg_options)
    bb_cfg = backbone_cfg(cfg)
    if 'type' not in bb_cfg:
        raise KeyError(f'CONFIG: the backbone dict has no `type`: {bb_cfg}')
    bb_cfg.update(overrides or {})
    bb_cfg.update(out_type=out_type, out_indices=-1, init_cfg=None)
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
            backbone = MODELS.build(bb_cfg)
    except TypeError as e:
        if 'out_type' not in str(e):
            raise
        raise TypeError(f'CONFIG: backbone {bb_cfg["type"]!r} does not take `out_type`; the tools '
                        f'need a ViT with out_type=cls_token/featmap (CoTAPVisionTransformer or '
                        f'mmpretrain VisionTransformer): {e}') from e
    return backbone.eval(), cfg


def get_normalization(cfg) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) in 0-255 RGB: ``model.data_preprocessor``'s if given, else ImageNet's."""
    pre = cfg.get('model', {}).get('data_preprocessor', None) or cfg.get('data_preprocessor', None)
    if pre and pre.get('mean') is not None and pre.get('std') is not None:
        return tuple(float(m) for m in pre['mean']), tuple(float(s) for s in pre['std'])
    return IMAGENET_MEAN, IMAGENET_STD


# -- weights --------------------------------------------------------------------------------


def read_checkpoint(checkpoint: str, unsafe_pickle: bool = False):
    """The object in ``checkpoint``: a local file through the safe reader
    (:func:`cotap_mm.utils.checkpoint_loading.load_source`), anything else (a URL, ``s3://``)
    through mmengine's ``CheckpointLoader``."""
    if osp.isfile(checkpoint) or '://' not in str(checkpoint):
        return load_source(checkpoint, unsafe_pickle=unsafe_pickle)[0]
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(checkpoint, map_location='cpu')


def _convert_hint(ckpt, checkpoint) -> str:
    layout = detect_layout(ckpt)
    cmd = suggest_command(layout, src=checkpoint, dst='<converted>.pth')
    if cmd is None:
        return ''
    return (f'The file looks like: {layout["description"]}; convert it first:\n'
            f"    {cmd}\nand load '<converted>.pth' with prefix='backbone.'.")


def select_backbone_state(ckpt, checkpoint: str, which: str = 'student',
                          prefix: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """The backbone tensors of a loaded checkpoint, prefix removed, and the prefix used.

    Args:
        ckpt: The loaded object (mmengine checkpoint ``{'state_dict': ...}`` or a state dict).
        checkpoint (str): Its file, for the messages.
        which (str): ``'student'`` or ``'teacher'`` (see :data:`NETWORK_PREFIXES`).
        prefix (str, optional): Explicit key prefix; ``''`` takes every key. Overrides
            ``which``.
    """
    if not isinstance(ckpt, dict):
        raise BackboneWeightsError(f'{checkpoint}: holds a {type(ckpt).__name__}, not a state '
                                   f'dict or checkpoint dict')
    state = ckpt.get('state_dict', ckpt)
    if not isinstance(state, dict):
        raise BackboneWeightsError(f'{checkpoint}: its `state_dict` is a '
                                   f'{type(state).__name__}, not a dict. '
                                   f'{_convert_hint(ckpt, checkpoint)}')
    if which not in NETWORK_PREFIXES:
        raise ValueError(f'which must be one of {sorted(NETWORK_PREFIXES)}, got {which!r}')
    explicit = prefix is not None
    if not explicit:
        prefix = NETWORK_PREFIXES[which]
    elif prefix and not prefix.endswith('.'):
        prefix += '.'
    sd = {k[len(prefix):]: v for k, v in state.items()
          if k.startswith(prefix) and torch.is_tensor(v)}
    if sd:
        return sd, prefix
    bare = 'cls_token' in state or 'patch_embed.projection.weight' in state
    if not explicit and which == 'student' and bare:
        return {k: v for k, v in state.items() if torch.is_tensor(v)}, ''
    if not explicit and which == 'teacher':
        raise BackboneWeightsError(
            f'{checkpoint}: no key starts with {prefix!r}, so it holds no EMA teacher (it is not '
            f'a CoTAP pretraining checkpoint; first keys: {first_keys(state)}). Use '
            f'--which student.')
    raise BackboneWeightsError(
        f'{checkpoint}: no key starts with {prefix!r} (first keys: {first_keys(state)}). '
        f'Extract the backbone with tools/model_converters/extract_backbone.py, or pass the '
        f"right prefix ('' for a bare backbone state dict). {_convert_hint(ckpt, checkpoint)}")


def check_backbone_state(module: torch.nn.Module,
                         state: Dict[str, torch.Tensor],
                         checkpoint: str,
                         allow_missing: Sequence[str] = (),
                         ckpt=None,
                         logger=None) -> Tuple[Dict[str, torch.Tensor], list]:
    """Check ``state`` against ``module`` with the policy of this module's docstring.

    Returns:
        tuple[dict, list]: The state to load (``oaf.*`` keys dropped for a module without the
        filter) and the allowed-missing keys of ``module`` that keep their initialisation.

    Raises:
        BackboneWeightsError: listing the unexpected, missing and mismatched keys.
    """
    allow_missing = tuple(allow_missing or ())
    own = module.state_dict()
    sd = dict(state)
    if not any(k.startswith('oaf.') for k in own):
        unused = sorted(k for k in sd if k.startswith('oaf.'))
        for k in unused:
            sd.pop(k)
        if unused:
            _log(logger, f'{checkpoint}: {len(unused)} oaf.* keys not used: the module has no '
                 f'object-aware filter (with_oaf=False: plain ViT features)', logging.WARNING)
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    allowed = [k for k in missing if allow_missing and k.startswith(allow_missing)]
    missing = [k for k in missing if k not in allowed]
    resizes_pos_embed = hasattr(module, '_prepare_pos_embed')
    mismatched = []
    for k, v in sd.items():
        if k not in own or not torch.is_tensor(v) or v.shape == own[k].shape:
            continue
        if (k == 'pos_embed' and resizes_pos_embed and v.dim() == 3
                and v.shape[-1] == own[k].shape[-1]):
            continue  # resized to the module's grid by the load hook
        mismatched.append(f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}')
    under = f', not under allow_missing={allow_missing}' if allow_missing else ''
    lines = mismatch_lines(unexpected, missing, mismatched, f' (not in the checkpoint{under})')
    if lines:
        lines.insert(0, f'{checkpoint} does not fit {type(module).__name__}:')
        hint = _convert_hint(ckpt, checkpoint) if ckpt is not None else ''
        if hint:
            lines.append(hint)
        elif any(k.startswith('oaf.') for k in missing):
            lines.append('The checkpoint has no object-aware filter: build the backbone with '
                         'with_oaf=False (e.g. `--cfg-options model.backbone.with_oaf=False`) to '
                         'use the plain ViT.')
        else:
            lines.append('Check arch / patch_size / with_oaf / num_prototypes of the backbone '
                         "against the checkpoint's meta.")
        raise BackboneWeightsError('\n'.join(lines))
    return sd, allowed


def load_backbone_weights(module: torch.nn.Module,
                          checkpoint: str,
                          which: str = 'student',
                          prefix: Optional[str] = None,
                          allow_missing: Sequence[str] = (),
                          unsafe_pickle: bool = False,
                          ckpt=None,
                          logger=None) -> dict:
    """Load the backbone weights of ``checkpoint`` into ``module``, strictly.

    Args:
        module (nn.Module): The built backbone.
        checkpoint (str): Checkpoint file (or URL).
        which (str): ``'student'`` (default) or ``'teacher'``.
        prefix (str, optional): Explicit key prefix (overrides ``which``; ``''``: every key).
        allow_missing (Sequence[str]): Key prefixes of ``module`` that may be absent.
        unsafe_pickle (bool): Allow the full unpickler (only for files you trust).
        ckpt (optional): The already loaded content of ``checkpoint``.
        logger (MMLogger, optional): Where to report.

    Returns:
        dict: ``meta`` of the checkpoint (or {}), ``prefix``, ``num_loaded``, ``dropped`` (the
        unused ``oaf.*`` keys) and ``allowed_missing`` (keys that keep their initialisation;
        the caller reports them).
    """
    if ckpt is None:
        if '://' not in str(checkpoint) and not osp.isfile(checkpoint):
            raise FileNotFoundError(f'CHECKPOINT {checkpoint!r} does not exist')
        ckpt = read_checkpoint(checkpoint, unsafe_pickle)
    state, used_prefix = select_backbone_state(ckpt, checkpoint, which, prefix)
    sd, allowed = check_backbone_state(module, state, checkpoint, allow_missing, ckpt, logger)
    result = module.load_state_dict(sd, strict=False)
    # the check above covers what load_state_dict reports; a load hook renaming keys would not
    left = [k for k in result.missing_keys if k not in allowed]
    if result.unexpected_keys or left:
        raise BackboneWeightsError(f'{checkpoint}: loading left unexpected keys '
                                   f'{first_keys(result.unexpected_keys)} and missing keys '
                                   f'{first_keys(left)}')
    _log(logger, f'Loaded {len(sd)} backbone tensors ({which if prefix is None else prefix!r}) '
         f'from {checkpoint}')
    meta = ckpt.get('meta', {}) if 'state_dict' in ckpt else {}
    return dict(meta=meta if isinstance(meta, dict) else {}, prefix=used_prefix,
                num_loaded=len(sd), dropped=sorted(set(state) - set(sd)),
                allowed_missing=allowed)


def load_checkpoint_backbone(config, checkpoint: str, prefix: str = 'backbone.', logger=None,
                             out_type: str = 'featmap'):
    """The backbone of ``config`` with ``checkpoint`` loaded strictly, built with the
    object-aware filter if and only if the checkpoint has ``<prefix>oaf.*`` keys (a plain
    ViT checkpoint gives D-wide features, an OAF one 2D-wide)."""
    content = read_checkpoint(checkpoint)
    state, _ = select_backbone_state(content, checkpoint, prefix=prefix)
    with_oaf = any(k.startswith('oaf.') for k in state)
    if not with_oaf:
        _log(logger, f'CKPT {checkpoint}: no {prefix}oaf.* keys, so its backbone is built with '
                     f'model.backbone.with_oaf=False (plain D-wide ViT features)')
    backbone, _ = build_backbone(config, out_type=out_type, overrides=dict(with_oaf=with_oaf))
    load_backbone_weights(backbone, checkpoint, prefix=prefix, ckpt=content, logger=logger)
    return backbone
