"""Convert released self-supervised ViT checkpoints (DINO, iBOT, Mugs, Leopart, timm, the official
CoTAP release) and checkpoints of our own CoTAP pretraining into mmengine checkpoints for
:class:`~cotap_mm.models.backbones.CoTAPVisionTransformer`.

Output format (what ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')`` or
:class:`~cotap_mm.models.utils.CoTAPPretrained` consume)::

    {'meta': {... source, arch, dropped keys ...},
     'state_dict': {'backbone.<key>': tensor}}

where ``<key>`` are the keys of ``CoTAPVisionTransformer`` (= mmpretrain ``VisionTransformer``
names for the ViT part, ``final_norm=False``), plus ``oaf.kernel``, ``oaf.norm_in.*``,
``oaf.norm_out_patch.*`` and ``oaf.norm_out_cls.*`` when the source has an object-aware filter.

Key rules DINO layout -> mmpretrain (spec openmmlab.md §7.3)::

    cls_token, pos_embed                      -> same
    patch_embed.proj.*                        -> patch_embed.projection.*
    blocks.i.norm1.* / norm2.*                -> layers.i.ln1.* / ln2.*
    blocks.i.attn.qkv.* / attn.proj.*         -> layers.i.attn.qkv.* / attn.proj.*
    blocks.i.mlp.fc1.* / mlp.fc2.*            -> layers.i.ffn.layers.0.0.* / ffn.layers.1.*
    norm.* (final norm)                       -> dropped (CoTAP has none), or ln1.* on request
    official CoTAP: kernel                    -> oaf.kernel
    official CoTAP: blocks.{L-1}.norm_in / norm_out_patch / norm_out_cls -> oaf.<same>
    (the same norms of blocks 0..L-2 exist in the official model but are never used: dropped)

Everything is pure logic on dicts of tensors, so the tools in ``tools/model_converters/`` only
parse arguments, call :func:`convert_checkpoint` / :func:`extract_backbone`, save the result with
:func:`cotap_mm.utils.fileio.atomic_save` and print :func:`format_summary`.
"""
import argparse
import math
import os
import os.path as osp
import pickle
import re
import zipfile
from collections import OrderedDict

import torch

__all__ = [
    'SRC_FORMATS', 'DEFAULT_WHICH', 'CheckpointConversionError', 'load_source', 'detect_layout',
    'convert_state_dict', 'convert_checkpoint', 'extract_backbone', 'format_summary',
    'suggest_command'
]

SRC_FORMATS = ('dino', 'ibot', 'mugs', 'leopart', 'cotap-official', 'timm')

# Which network of a student/teacher checkpoint to convert when --which is not given:
# - DINO / iBOT / Mugs publish (and evaluate) the EMA teacher backbone;
# - Leopart's own evaluation and CoTAP's loader (spec §4.1: keys prefixed `teacher.` dropped) use
#   the student (`model.`);
# - the official CoTAP evaluation loads the student (`net.`; spec §6.1 drops `net_teacher.*`).
DEFAULT_WHICH = {
    'dino': 'teacher',
    'ibot': 'teacher',
    'mugs': 'teacher',
    'leopart': 'student',
    'cotap-official': 'student',
    'timm': None,  # a single network
}

_BACKBONE_PREFIX = 'backbone.'

# Prefixes under which each layout keeps the ViT (tried in order; the first one holding a
# `cls_token` wins). '' is a bare backbone state dict.
_DINO_ROOTS = ('', 'module.', 'backbone.', 'module.backbone.')
_ROOTS = {
    'dino': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'ibot': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'mugs': {'student': _DINO_ROOTS, 'teacher': _DINO_ROOTS},
    'timm': {None: ('', 'module.')},
    # Lightning module with `self.model` (student) and `self.teacher`
    'leopart': {'student': ('model.', 'module.model.'), 'teacher': ('teacher.', 'module.teacher.')},
    # Lightning module with `self.net = DinoFeaturizer(...)` (whose ViT is `.model`) and
    # `self.net_teacher`; '' / 'model.' accept an already extracted ViT / DinoFeaturizer dict
    'cotap-official': {'student': ('net.model.', 'model.', ''),
                       'teacher': ('net_teacher.model.', )},
}

# Source keys (relative to the backbone root) that are dropped on purpose, with the reason.
_COMMON_DROPS = ((r'^head\.', 'projection / DINO head (not part of the backbone)'), )
_FORMAT_DROPS = {
    'dino': (),
    'ibot': ((r'^masked_embed$', 'iBOT mask token (used only for masked image modelling)'), ),
    'mugs': ((r'^relation_blocks\.', 'Mugs relation blocks (local-group supervision only)'), ),
    'leopart': ((r'^prototypes\.', 'Leopart clustering prototypes'), ),
    'timm': ((r'^fc_norm\.', 'timm classifier pooling norm'),
             (r'^pre_logits\.', 'timm pre-logits layer')),
    'cotap-official': ((r'^projection_heads\.', 'CoTAP projection heads (training only)'), ),
}

_VIT_RULES = (
    (r'^(cls_token|pos_embed)$', r'\1'),
    (r'^patch_embed\.proj\.(weight|bias)$', r'patch_embed.projection.\1'),
    (r'^blocks\.(\d+)\.norm1\.(weight|bias)$', r'layers.\1.ln1.\2'),
    (r'^blocks\.(\d+)\.norm2\.(weight|bias)$', r'layers.\1.ln2.\2'),
    (r'^blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)$', r'layers.\1.attn.\2.\3'),
    (r'^blocks\.(\d+)\.mlp\.fc1\.(weight|bias)$', r'layers.\1.ffn.layers.0.0.\2'),
    (r'^blocks\.(\d+)\.mlp\.fc2\.(weight|bias)$', r'layers.\1.ffn.layers.1.\2'),
)
_FINAL_NORM = r'^norm\.(weight|bias)$'
_OAF_NORM = r'^blocks\.(\d+)\.(norm_in|norm_out_patch|norm_out_cls)\.(weight|bias)$'

# our own CoTAP pretraining checkpoints (cotap_mm/models/algorithms/cotap.py)
_OURS_ROOTS = {
    'student': ('backbone.', 'module.backbone.'),
    'teacher': ('teacher.module.backbone.', 'module.teacher.module.backbone.'),
}

_FIRST = 8  # keys shown in error messages


class CheckpointConversionError(ValueError):
    """A checkpoint cannot be converted; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


def _first(keys, n=_FIRST):
    keys = list(keys)
    shown = ', '.join(repr(k) for k in keys[:n])
    more = f', ... ({len(keys)} in total)' if len(keys) > n else f' ({len(keys)} in total)'
    return '[' + shown + ']' + more if keys else '[] (0 in total)'


def _unsafe_globals(path):
    getter = getattr(torch.serialization, 'get_unsafe_globals_in_checkpoint', None)
    if getter is None:
        return None
    try:
        return getter(path)
    except Exception:  # noqa: BLE001  (only used to improve an error message)
        return None


def _looks_like_torch_file(path):
    """torch.save writes a zip archive (torch >= 1.6) or, legacy, a pickle (starts 0x80)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, 'rb') as f:
        return f.read(1) == b'\x80'


def load_source(path, unsafe_pickle=False):
    """Load a checkpoint file on CPU, safely by default.

    ``torch.load(weights_only=True)`` is tried first (with ``argparse.Namespace`` allowed, which
    DINO / iBOT / Mugs store as ``args``, and mmengine's own types, which ``import cotap_mm``
    allow-lists). Files that pickle other Python objects, typically PyTorch-Lightning ``.ckpt``
    files (hyper-parameters as ``omegaconf`` / ``AttributeDict`` objects, callback states, loop
    states), need ``weights_only=False``, which can execute arbitrary code from the file: that
    only happens with ``unsafe_pickle=True`` (``--unsafe-pickle``), for files you trust.

    Args:
        path (str): Checkpoint file (``.pth`` / ``.ckpt`` / ``.pt``; ``.safetensors`` needs the
            ``safetensors`` package).
        unsafe_pickle (bool): Allow the full unpickler. Defaults to False.

    Returns:
        tuple: ``(obj, how)`` with the loaded object and a description of how it was loaded.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise CheckpointConversionError(f'{path}: no such file')
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointConversionError(
                f'{path}: reading .safetensors files needs the `safetensors` package '
                '(pip install safetensors)') from e
        return dict(load_file(path, device='cpu')), 'safetensors'
    if not _looks_like_torch_file(path):
        raise CheckpointConversionError(
            f'{path}: not a readable torch checkpoint (neither a torch.save zip archive nor a '
            'legacy pickle); is it a file of another format?')
    import cotap_mm.utils.compat  # noqa: F401  (allow-lists mmengine's checkpoint types)
    safe = [argparse.Namespace]
    try:
        ctx = getattr(torch.serialization, 'safe_globals', None)
        if ctx is not None:
            with ctx(safe):
                obj = torch.load(path, map_location='cpu', weights_only=True)
        else:  # torch < 2.5: weights_only still exists (>= 1.13) but without allow-lists
            obj = torch.load(path, map_location='cpu', weights_only=True)
        return obj, 'torch.load(weights_only=True)'
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as e:
        msg = str(e)
        low = msg.lower()
        weights_only_refusal = ('weights only load failed' in low or 'weights_only' in low
                                or 'unsupported global' in low)
        if not weights_only_refusal:
            raise CheckpointConversionError(
                f'{path}: not a readable torch checkpoint ({type(e).__name__}: {msg.strip()[:300]})'
            ) from e
        if not unsafe_pickle:
            unsafe = _unsafe_globals(path)
            listed = f' It references these non-tensor Python objects: {unsafe}.' if unsafe else ''
            raise CheckpointConversionError(
                f'{path}: torch.load(weights_only=True) refused this file.{listed} This is '
                'normal for PyTorch-Lightning .ckpt files (Leopart, the official CoTAP release), '
                'which pickle hyper-parameters and callback/loop states next to the weights. '
                'Loading them needs weights_only=False, which can run arbitrary code stored in '
                'the file: if you trust it, re-run with --unsafe-pickle.') from e
    except Exception as e:  # noqa: BLE001  (zip/format errors of a non-checkpoint file)
        if not unsafe_pickle:
            raise CheckpointConversionError(
                f'{path}: not a readable torch checkpoint ({type(e).__name__}: '
                f'{str(e).strip()[:300]})') from e
    try:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointConversionError(
            f'{path}: could not be loaded even with weights_only=False ({type(e).__name__}: '
            f'{str(e).strip()[:300]}); a missing module of the training code can cause this') from e
    return obj, 'torch.load(weights_only=False) (--unsafe-pickle)'


# ------------------------------------------------------------------------------------------------
# layout detection
# ------------------------------------------------------------------------------------------------


def _is_tensor_dict(d):
    return isinstance(d, dict) and len(d) > 0 and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in d.items())


def _flat_state_dict(obj):
    """The tensor dict of a checkpoint object: its ``state_dict`` / ``model`` entry or itself."""
    if not isinstance(obj, dict):
        return None
    for key in ('state_dict', 'model'):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _has(keys, *names):
    return all(n in keys for n in names)


def _dino_style_flavour(keys, root):
    """dino / ibot / mugs / timm for a DINO-layout ViT whose keys start with ``root``."""
    if root + 'masked_embed' in keys or any(k.startswith(root + 'head.last_layer2') for k in keys):
        return 'ibot'
    if any(k.startswith(root + 'relation_blocks.') for k in keys):
        return 'mugs'
    if root + 'fc_norm.weight' in keys or root + 'head.weight' in keys:
        return 'timm'
    return 'dino'


def detect_layout(obj):
    """Guess which layout a checkpoint (or its state dict) has.

    Args:
        obj (dict): A loaded checkpoint object or a flat ``{key: tensor}`` state dict.

    Returns:
        dict | None: ``{'format': ..., 'which': [...], 'description': ...}`` where ``format`` is
        one of :data:`SRC_FORMATS`, ``'cotap-mm'`` (a checkpoint of our own CoTAP pretraining:
        use ``extract_backbone.py``) or ``'mmpretrain'`` (already converted), and ``which`` the
        networks present; None when nothing ViT-like is found (a ResNet, another model, ...).
    """
    if not isinstance(obj, dict):
        return None
    # DINO / iBOT / Mugs full checkpoints: {'student': {...}, 'teacher': {...}, ...}
    nets = [n for n in ('student', 'teacher') if isinstance(obj.get(n), dict)]
    if nets:
        keys = set(obj[nets[-1]])
        for root in ('module.backbone.', 'backbone.', 'module.', ''):
            if root + 'cls_token' in keys:
                fmt = _dino_style_flavour(keys, root)
                if fmt == 'timm':
                    fmt = 'dino'
                if fmt == 'dino' and any(k.startswith(('instance_head.', 'module.instance_head.',
                                                       'group_head.', 'module.group_head.'))
                                         for k in keys):
                    fmt = 'mugs'
                return dict(format=fmt, which=nets,
                            description=f'{fmt}-style full checkpoint with {"/".join(nets)} '
                            f'networks (backbone under {root!r})')
    sd = _flat_state_dict(obj)
    if not isinstance(sd, dict):
        return None
    keys = set(sd)
    if any(k.startswith('net.model.') for k in keys) or any(
            k.startswith('net_teacher.model.') for k in keys):
        which = [w for w, p in (('student', 'net.model.'), ('teacher', 'net_teacher.model.'))
                 if p + 'cls_token' in keys]
        return dict(format='cotap-official', which=which,
                    description='official CoTAP Lightning checkpoint (net. / net_teacher.)')
    if 'model.kernel' in keys and 'model.cls_token' in keys:
        return dict(format='cotap-official', which=['student'],
                    description='official CoTAP DinoFeaturizer state dict (model.)')
    if 'kernel' in keys and any(re.match(_OAF_NORM, k) for k in keys):
        return dict(format='cotap-official', which=['student'],
                    description='bare official CoTAP ViT (kernel + per-block OAF norms)')
    if any(k.startswith('teacher.module.backbone.') for k in keys) or (
            'backbone.layers.0.ln1.weight' in keys and any(
                k.startswith(('patch_head.', 'cls_head.')) for k in keys)):
        return dict(format='cotap-mm', which=['student', 'teacher'],
                    description='checkpoint of cotap_mm CoTAP pretraining '
                    '(use tools/model_converters/extract_backbone.py)')
    for root in ('backbone.', ''):
        if _has(keys, root + 'cls_token', root + 'layers.0.ln1.weight'):
            return dict(format='mmpretrain', which=[],
                        description=f'already in mmpretrain VisionTransformer layout (prefix '
                        f'{root!r})')
    if 'model.cls_token' in keys:
        which = ['student'] + (['teacher'] if 'teacher.cls_token' in keys else [])
        return dict(format='leopart', which=which,
                    description='Leopart Lightning checkpoint (model. / teacher.)')
    for root in ('', 'module.', 'backbone.', 'module.backbone.'):
        if _has(keys, root + 'cls_token', root + 'blocks.0.norm1.weight'):
            fmt = _dino_style_flavour(keys, root)
            return dict(format=fmt, which=[] if fmt == 'timm' else ['teacher'],
                        description=f'{fmt}-style ViT state dict (prefix {root!r})')
    return None


def suggest_command(layout, src='SRC', dst='DST'):
    """The converter command line for a :func:`detect_layout` result (or None)."""
    if layout is None:
        return None
    fmt = layout['format']
    if fmt == 'cotap-mm':
        return f'python tools/model_converters/extract_backbone.py {src} {dst}'
    if fmt not in SRC_FORMATS:
        return None
    return f'python tools/model_converters/convert.py --src-format {fmt} {src} {dst}'


def _layout_hint(obj):
    layout = detect_layout(obj)
    if layout is None:
        return ('It does not look like any supported ViT layout (no `cls_token` / '
                '`blocks.0.norm1.weight` keys): is it a ResNet or another model, or a file of '
                'another format?')
    cmd = suggest_command(layout)
    hint = f'It looks like: {layout["description"]}'
    if layout['which']:
        hint += f' (networks: {", ".join(layout["which"])})'
    if cmd:
        hint += f'. Try: {cmd}'
    elif layout['format'] == 'mmpretrain':
        hint += '; it needs no conversion (load it with prefix="backbone." or prefix=None)'
    return hint + '.'


# ------------------------------------------------------------------------------------------------
# conversion
# ------------------------------------------------------------------------------------------------


def _select_network(obj, fmt, which, explicit, path):
    """Pick the flat state dict of the wanted network out of a checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointConversionError(
            f'{path}: expected a dict checkpoint, got a {type(obj).__name__}. {_layout_hint(obj)}')
    if fmt in ('dino', 'ibot', 'mugs') and ('student' in obj or 'teacher' in obj):
        if which not in obj or not isinstance(obj[which], dict):
            have = [k for k in ('student', 'teacher') if isinstance(obj.get(k), dict)]
            raise CheckpointConversionError(
                f'{path}: --which {which} asked for, but this full checkpoint holds only '
                f'{have}; pass --which {have[0] if have else "teacher"}')
        return obj[which], which
    if fmt in ('dino', 'ibot', 'mugs', 'timm'):
        if explicit and which is not None and not (fmt != 'timm' and which == 'teacher'):
            kind = ('a single network' if fmt == 'timm' else
                    'a single backbone (the released teacher)')
            raise CheckpointConversionError(
                f'{path}: --which {which} asked for, but this {fmt} file holds {kind}, not '
                'student/teacher networks; drop --which (or use the *_full_checkpoint.pth / '
                'checkpoint.pth release, which has both)')
        sd = _flat_state_dict(obj)
        where = ('state_dict' if sd is not obj and 'state_dict' in obj else
                 'model' if sd is not obj else '<top level>')
        return sd, where
    # Lightning checkpoints: student and teacher share one state dict, told apart by prefix
    return _flat_state_dict(obj), 'state_dict' if 'state_dict' in obj else '<top level>'


def _infer_heads(embed_dims, num_layers, ffn, arch=None, num_heads=None):
    if num_heads is not None:
        return int(num_heads), 'given (--num-heads)'
    if isinstance(arch, dict) and 'num_heads' in arch:
        return int(arch['num_heads']), 'given (--arch)'
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    if isinstance(arch, str):
        setting = CoTAPVisionTransformer.arch_zoo.get(arch.lower())
        if setting is None:
            raise CheckpointConversionError(
                f'--arch {arch!r} is unknown; choose one of '
                f'{sorted(CoTAPVisionTransformer.arch_zoo)} or omit it to infer the arch')
        return setting['num_heads'], f'given (--arch {arch})'
    matches = [name for name, setting in CoTAPVisionTransformer.arch_zoo.items()
               if (setting['embed_dims'], setting['num_layers'],
                   setting['feedforward_channels']) == (embed_dims, num_layers, ffn)]
    if matches:
        name = max(matches, key=len)  # the most descriptive alias ('small', not 's')
        return (CoTAPVisionTransformer.arch_zoo[name]['num_heads'],
                f'inferred (matches arch {name!r})')
    if embed_dims % 64 == 0:
        # DINO / timm / iBOT / Mugs ViTs all use 64-d heads (ViT-S 6, ViT-B 12, ViT-L 16)
        return embed_dims // 64, 'inferred (64-d heads, the DINO/timm convention)'
    raise CheckpointConversionError(
        f'cannot infer the number of heads of a {embed_dims}-d ViT from tensor shapes (they do '
        'not depend on it); pass --num-heads')


def _arch_settings(arch, inferred, num_heads):
    """Arch dict to build: the given ``--arch`` (name/dict) or the inferred shapes."""
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    if arch is None:
        return dict(inferred, num_heads=num_heads)
    if isinstance(arch, str):
        setting = CoTAPVisionTransformer.arch_zoo.get(arch.lower())
        if setting is None:
            raise CheckpointConversionError(
                f'--arch {arch!r} is unknown; choose one of '
                f'{sorted(CoTAPVisionTransformer.arch_zoo)} or omit it to infer the arch')
        return dict(setting)
    return dict(arch)


def _build_reference(arch_settings, patch_size, img_size, with_oaf, num_prototypes, final_norm):
    """State-dict shapes of the CoTAPVisionTransformer the converted weights must fit."""
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    kwargs = dict(arch=arch_settings, patch_size=patch_size, img_size=img_size,
                  with_oaf=with_oaf, final_norm=final_norm, out_type='raw')
    if with_oaf:
        kwargs['num_prototypes'] = num_prototypes
    try:
        # meta device: shapes only, no memory or init time for ViT-B/L
        with torch.device('meta'):
            model = CoTAPVisionTransformer(**kwargs)
    except Exception:  # noqa: BLE001  (some init op without a meta kernel: build on CPU)
        model = CoTAPVisionTransformer(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_against_model(state_dict, expected, path, what):
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(state_dict[k].shape), expected[k]) for k in expected
                  if k in state_dict and tuple(state_dict[k].shape) != expected[k]]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'{path}: the converted weights do not fit CoTAPVisionTransformer({what}):']
    if missing:
        lines.append(f'  missing keys: {_first(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys: {_first(unexpected)}')
    if mismatched:
        shown = '; '.join(f'{k}: checkpoint {s} vs model {e}' for k, s, e in mismatched[:_FIRST])
        lines.append(f'  shape mismatches ({len(mismatched)}): {shown}')
    raise CheckpointConversionError('\n'.join(lines))


def _infer_from_dino_layout(sub, path):
    """embed_dims, num_layers, ffn, patch_size and img_size from DINO-layout keys."""
    for key in ('cls_token', 'pos_embed', 'patch_embed.proj.weight'):
        if key not in sub:
            raise CheckpointConversionError(f'{path}: the backbone has no {key!r}')
    embed_dims = sub['cls_token'].shape[-1]
    w = sub['patch_embed.proj.weight']
    if w.dim() != 4 or w.shape[-1] != w.shape[-2]:
        raise CheckpointConversionError(
            f'{path}: patch_embed.proj.weight has shape {tuple(w.shape)}; expected a square '
            '(D, 3, p, p) convolution')
    patch_size = int(w.shape[-1])
    blocks = sorted({int(m.group(1)) for m in (re.match(r'^blocks\.(\d+)\.', k) for k in sub)
                     if m})
    if not blocks or blocks != list(range(len(blocks))):
        raise CheckpointConversionError(
            f'{path}: transformer blocks must be numbered 0..L-1, found indices {blocks[:20]}')
    fc1 = sub.get('blocks.0.mlp.fc1.weight')
    if fc1 is None:
        raise CheckpointConversionError(f'{path}: the backbone has no blocks.0.mlp.fc1.weight')
    num_tokens = sub['pos_embed'].shape[1] - 1  # minus the CLS position
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise CheckpointConversionError(
            f'{path}: pos_embed {tuple(sub["pos_embed"].shape)} is not 1 CLS + a square grid of '
            'patch positions')
    return dict(embed_dims=int(embed_dims), num_layers=len(blocks),
                feedforward_channels=int(fc1.shape[0])), patch_size, grid * patch_size


def convert_state_dict(state_dict,
                       src_format,
                       which=None,
                       arch=None,
                       num_heads=None,
                       keep_final_norm=False,
                       path='<state_dict>',
                       container=None):
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
    if src_format not in SRC_FORMATS:
        raise CheckpointConversionError(
            f'unknown --src-format {src_format!r}; choose one of {list(SRC_FORMATS)}')
    if which is None:
        which = DEFAULT_WHICH[src_format]
    if not _is_tensor_dict(state_dict):
        bad = [k for k, v in (state_dict or {}).items() if not torch.is_tensor(v)] if isinstance(
            state_dict, dict) else []
        raise CheckpointConversionError(
            f'{path}: expected a dict of tensors for the {src_format} backbone, got '
            f'{type(state_dict).__name__}' + (f' with non-tensor entries {_first(bad)}' if bad
                                              else '') + f'. {_layout_hint(state_dict)}')
    roots = _ROOTS[src_format].get(which if src_format != 'timm' else None)
    if roots is None:
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    root = next((r for r in roots if r + 'cls_token' in state_dict), None)
    if root is None:
        raise CheckpointConversionError(
            f'{path}: no {src_format} ViT backbone found for --which {which}: expected a '
            f'`cls_token` under one of the prefixes {list(roots)}. Keys that did not match: '
            f'{_first(state_dict)}. {_layout_hint(state_dict)}')
    sub = OrderedDict((k[len(root):], v) for k, v in state_dict.items() if k.startswith(root))
    outside = [k for k in state_dict if not k.startswith(root)]

    shapes, patch_size, img_size = _infer_from_dino_layout(sub, path)
    last = shapes['num_layers'] - 1
    is_official = src_format == 'cotap-official'
    drops = [(re.compile(p), why) for p, why in _COMMON_DROPS + _FORMAT_DROPS[src_format]]

    out, dropped, unmatched = OrderedDict(), OrderedDict(), []

    def drop(key, why):
        dropped.setdefault(why, []).append(key)

    for key, value in sub.items():
        new = None
        for pattern, repl in _VIT_RULES:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is None and re.match(_FINAL_NORM, key):
            if keep_final_norm:
                new = 'ln1.' + key.split('.', 1)[1]
            else:
                drop(key, 'final norm (CoTAP has no final norm; --keep-final-norm keeps it as '
                     'ln1.*)')
                continue
        if new is None and is_official:
            m = re.match(_OAF_NORM, key)
            if key == 'kernel':
                new = 'oaf.kernel'
            elif m and int(m.group(1)) == last:
                new = f'oaf.{m.group(2)}.{m.group(3)}'
            elif m:
                drop(key, 'OAF norms of blocks 0..L-2 (instantiated but never used, spec §2.1)')
                continue
        if new is None:
            why = next((why for pattern, why in drops if pattern.match(key)), None)
            if why is not None:
                drop(key, why)
                continue
            unmatched.append(key)
            continue
        out[new] = value
    if unmatched:
        raise CheckpointConversionError(
            f'{path}: {len(unmatched)} key(s) of the {src_format} backbone (prefix {root!r}) '
            f'match no conversion rule: {_first(unmatched)}. {_layout_hint(state_dict)} If the '
            'layout is right, the model has parts the converter does not know (layer scale, '
            'register tokens, ...): CoTAPVisionTransformer cannot hold them.')
    with_oaf = 'oaf.kernel' in out
    if is_official and not with_oaf:
        raise CheckpointConversionError(
            f'{path}: --src-format cotap-official but the backbone has no `kernel` (the OAF '
            f'prototypes). {_layout_hint(state_dict)}')
    num_prototypes = int(out['oaf.kernel'].shape[0]) if with_oaf else None

    heads, heads_how = _infer_heads(shapes['embed_dims'], shapes['num_layers'],
                                    shapes['feedforward_channels'], arch, num_heads)
    arch_settings = _arch_settings(arch, shapes, heads)
    expected = _build_reference(arch_settings, patch_size, img_size, with_oaf, num_prototypes,
                                keep_final_norm)
    _check_against_model(
        out, expected, path,
        f'arch={arch_settings}, patch_size={patch_size}, with_oaf={with_oaf}' +
        (f'; the checkpoint looks like {shapes}, drop --arch to use it' if arch is not None
         else ''))

    backbone_cfg = dict(type='CoTAPVisionTransformer', arch=arch_settings,
                        patch_size=patch_size, img_size=img_size, with_oaf=with_oaf,
                        final_norm=keep_final_norm)
    if with_oaf:
        backbone_cfg['num_prototypes'] = num_prototypes
    meta = dict(
        converter='cotap_mm tools/model_converters/convert.py',
        source=dict(file=osp.abspath(path) if osp.exists(str(path)) else str(path),
                    format=src_format, which=which, container=container, prefix=root,
                    num_keys=len(state_dict)),
        arch=arch_settings,
        num_heads_source=heads_how,
        patch_size=patch_size,
        img_size=img_size,
        with_oaf=with_oaf,
        num_prototypes=num_prototypes,
        final_norm=keep_final_norm,
        backbone_cfg=backbone_cfg,
        dropped={why: keys for why, keys in dropped.items()},
        ignored_outside_prefix=dict(count=len(outside), first=outside[:20]),
        num_converted=len(out),
    )
    state = OrderedDict((_BACKBONE_PREFIX + k, v.detach().clone().contiguous())
                        for k, v in out.items())
    return dict(meta=meta, state_dict=state)


def convert_checkpoint(src,
                       src_format,
                       which=None,
                       arch=None,
                       num_heads=None,
                       keep_final_norm=False,
                       unsafe_pickle=False):
    """Load ``src`` and convert it (see :func:`convert_state_dict`).

    Args:
        src (str): Source checkpoint file.
        src_format (str): One of :data:`SRC_FORMATS`.
        which (str, optional): ``'student'`` or ``'teacher'``; None uses
            :data:`DEFAULT_WHICH`.
        arch, num_heads, keep_final_norm: see :func:`convert_state_dict`.
        unsafe_pickle (bool): See :func:`load_source`.

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    if src_format not in SRC_FORMATS:
        raise CheckpointConversionError(
            f'unknown --src-format {src_format!r}; choose one of {list(SRC_FORMATS)}')
    if which not in (None, 'student', 'teacher'):
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    explicit = which is not None
    if which is None:
        which = DEFAULT_WHICH[src_format]
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    sd, container = _select_network(obj, src_format, which, explicit, src)
    ckpt = convert_state_dict(sd, src_format, which=which, arch=arch, num_heads=num_heads,
                              keep_final_norm=keep_final_norm, path=src, container=container)
    ckpt['meta']['source']['loaded_with'] = how
    ckpt['meta']['source']['which_default'] = not explicit
    return ckpt


def extract_backbone(src, which='student', num_heads=None, unsafe_pickle=False,
                     drop_final_norm=False):
    """Backbone of a cotap_mm CoTAP pretraining checkpoint as a ``backbone.*`` checkpoint.

    The CoTAP algorithm (``cotap_mm/models/algorithms/cotap.py``) keeps the student backbone
    under ``backbone.*`` and the EMA teacher (a ``CoTAPTeacherEMA`` over
    ``ModuleDict(backbone, patch_head, cls_head)``) under ``teacher.module.backbone.*``; heads,
    queues, the prototype bank and the teacher's ``steps`` are dropped.

    Args:
        src (str): Checkpoint saved by the Runner (``{'meta', 'state_dict', ...}``).
        which (str): ``'student'`` (default: what the official evaluation uses, spec §6.1) or
            ``'teacher'``.
        num_heads (int, optional): Recorded in meta when it cannot be inferred.
        unsafe_pickle (bool): See :func:`load_source`.
        drop_final_norm (bool): Drop the final LayerNorm (``ln1.*``) of a backbone trained with
            ``final_norm=True`` (e.g. the demo's DINO-like init), as CoTAP drops DINO's final
            norm (spec §2.1); it is listed under ``meta['dropped']``.

    Returns:
        dict: ``{'meta': {...}, 'state_dict': {'backbone.<key>': Tensor}}``.
    """
    if which not in _OURS_ROOTS:
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    obj, how = load_source(src, unsafe_pickle=unsafe_pickle)
    sd = _flat_state_dict(obj)
    if not _is_tensor_dict(sd):
        raise CheckpointConversionError(
            f'{src}: expected an mmengine checkpoint with a `state_dict` of tensors. '
            f'{_layout_hint(obj)}')
    roots = _OURS_ROOTS[which]
    root = next((r for r in roots if r + 'cls_token' in sd), None)
    if root is None:
        have = [w for w, rs in _OURS_ROOTS.items() if any(r + 'cls_token' in sd for r in rs)]
        extra = (f' This checkpoint has the {have} backbone(s); pass --which {have[0]}.'
                 if have else f' {_layout_hint(obj)}')
        raise CheckpointConversionError(
            f'{src}: no CoTAP {which} backbone found (expected keys under one of {list(roots)}); '
            f'keys that did not match: {_first(sd)}.{extra}')
    sub = OrderedDict((k[len(root):], v) for k, v in sd.items() if k.startswith(root))
    dropped = {}
    if drop_final_norm:
        dropped['final norm (--drop-final-norm)'] = [k for k in sub if k.startswith('ln1.')]
        sub = OrderedDict((k, v) for k, v in sub.items() if not k.startswith('ln1.'))
    for key in ('cls_token', 'pos_embed', 'patch_embed.projection.weight',
                'layers.0.ffn.layers.0.0.weight'):
        if key not in sub:
            raise CheckpointConversionError(f'{src}: the {which} backbone has no {key!r}')
    layers = sorted({int(m.group(1)) for m in (re.match(r'^layers\.(\d+)\.', k) for k in sub)
                     if m})
    shapes = dict(embed_dims=int(sub['cls_token'].shape[-1]), num_layers=len(layers),
                  feedforward_channels=int(sub['layers.0.ffn.layers.0.0.weight'].shape[0]))
    patch_size = int(sub['patch_embed.projection.weight'].shape[-1])
    grid = math.isqrt(sub['pos_embed'].shape[1] - 1)
    with_oaf = 'oaf.kernel' in sub
    num_prototypes = int(sub['oaf.kernel'].shape[0]) if with_oaf else None
    final_norm = 'ln1.weight' in sub
    heads, heads_how = _infer_heads(shapes['embed_dims'], shapes['num_layers'],
                                    shapes['feedforward_channels'], None, num_heads)
    arch_settings = dict(shapes, num_heads=heads)
    expected = _build_reference(arch_settings, patch_size, grid * patch_size, with_oaf,
                                num_prototypes, final_norm)
    _check_against_model(sub, expected, src, f'arch={arch_settings}, with_oaf={with_oaf}')
    run_meta = obj.get('meta', {}) if isinstance(obj, dict) else {}
    backbone_cfg = dict(type='CoTAPVisionTransformer', arch=arch_settings, patch_size=patch_size,
                        img_size=grid * patch_size, with_oaf=with_oaf, final_norm=final_norm)
    if with_oaf:
        backbone_cfg['num_prototypes'] = num_prototypes
    meta = dict(
        converter='cotap_mm tools/model_converters/extract_backbone.py',
        source=dict(file=osp.abspath(src), format='cotap-mm', which=which, prefix=root,
                    loaded_with=how, num_keys=len(sd),
                    epoch=run_meta.get('epoch') if isinstance(run_meta, dict) else None,
                    iter=run_meta.get('iter') if isinstance(run_meta, dict) else None),
        arch=arch_settings,
        num_heads_source=heads_how,
        patch_size=patch_size,
        img_size=grid * patch_size,
        with_oaf=with_oaf,
        num_prototypes=num_prototypes,
        final_norm=final_norm,
        backbone_cfg=backbone_cfg,
        dropped={k: v for k, v in dropped.items() if v},
        ignored_outside_prefix=dict(count=len(sd) - len(sub),
                                    first=[k for k in sd if not k.startswith(root)][:20]),
        num_converted=len(sub),
    )
    state = OrderedDict((_BACKBONE_PREFIX + k, v.detach().clone().contiguous())
                        for k, v in sub.items())
    return dict(meta=meta, state_dict=state)


def format_summary(ckpt, dst=None):
    """Human-readable summary of a converted checkpoint's ``meta``."""
    meta = ckpt['meta']
    src = meta['source']
    arch = meta['arch']
    lines = [
        f'source      : {src["file"]} ({src["format"]}, {src.get("which") or "single network"}'
        + (', default' if src.get('which_default') else '') + f'; prefix {src["prefix"]!r}'
        + (f', loaded with {src["loaded_with"]}' if src.get('loaded_with') else '') + ')',
        f'arch        : embed_dims={arch["embed_dims"]} num_layers={arch["num_layers"]} '
        f'num_heads={arch["num_heads"]} ({meta["num_heads_source"]}) '
        f'ffn={arch["feedforward_channels"]} patch_size={meta["patch_size"]} '
        f'img_size={meta["img_size"]}',
        f'OAF         : ' + (f'yes ({meta["num_prototypes"]} prototypes)' if meta['with_oaf']
                             else 'no (oaf.* will be initialised fresh: allow_missing oaf.)'),
        f'final norm  : ' + ('kept as ln1.*' if meta['final_norm'] else 'none'),
        f'converted   : {meta["num_converted"]} tensors -> backbone.*',
    ]
    for why, keys in meta['dropped'].items():
        lines.append(f'dropped     : {len(keys)} x {why}: {_first(keys, 4)}')
    ign = meta['ignored_outside_prefix']
    if ign['count']:
        lines.append(f'not selected: {ign["count"]} keys outside {src["prefix"]!r} (other '
                     f'network / heads / training state), e.g. {ign["first"][:4]}')
    if dst is not None:
        lines.append(f'written     : {dst}')
        lines.append(f"use with    : init_cfg=dict(type='CoTAPPretrained', checkpoint='{dst}', "
                     "prefix='backbone.')")
    return '\n'.join(lines)
