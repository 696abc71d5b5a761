"""Checkpoint layouts (DINO, iBOT, Mugs, Leopart, timm, DINOv2, DINOv3, official CoTAP, ours): where
each keeps its networks, which one a file has, and the converter command for it.

Pure inspection of dict keys, so the strict loader (:class:`~cotap_mm.models.utils.CoTAPPretrained`)
can name the right command in its error without importing the converters; the converters
(``cotap_mm/converters/``) know the key names inside one network.
"""
from collections import OrderedDict

from .checkpoint_loading import CheckpointConversionError, first_keys, flat_state_dict

__all__ = ['SRC_FORMATS', 'DEFAULT_WHICH', 'NETWORK_PREFIXES', 'ROOTS', 'select_network',
           'network_state', 'detect_layout', 'suggest_command', 'layout_hint']

SRC_FORMATS = ('dino', 'ibot', 'mugs', 'leopart', 'cotap-official', 'timm', 'dinov2', 'dinov3')
# where a checkpoint of our own CoTAP pretraining keeps each network's backbone
NETWORK_PREFIXES = dict(student='backbone.', teacher='teacher.module.backbone.')

# Prefixes under which a layout keeps each network's ViT (tried in order: the first one holding
# a `cls_token`, or Hugging Face's `embeddings.cls_token`, wins; '' is a bare backbone). The
# first network is the one converted without --which (None: the file holds one network):
# - DINO / iBOT / Mugs publish (and evaluate) the EMA teacher backbone;
# - Leopart's own evaluation and CoTAP's loader (which drops keys prefixed `teacher.`) use the
#   student (`model.`); Leopart is a Lightning module with `self.model` and `self.teacher`;
# - the official CoTAP evaluation loads the student (`net.`; it drops `net_teacher.*`,
#   docs/method.md §6.1): a Lightning module with `self.net = DinoFeaturizer(...)` (whose ViT is
#   `.model`) and `self.net_teacher`; '' / 'model.' accept an extracted ViT / DinoFeaturizer;
# - our own pretraining: the student is `backbone.`, the EMA teacher `teacher.module.backbone.`.
_DINO = ('', 'module.', 'backbone.', 'module.backbone.')
ROOTS = {
    'dino': dict(teacher=_DINO, student=_DINO),
    'ibot': dict(teacher=_DINO, student=_DINO),
    'mugs': dict(teacher=_DINO, student=_DINO),
    'leopart': dict(student=('model.', 'module.model.'), teacher=('teacher.', 'module.teacher.')),
    'cotap-official': dict(student=('net.model.', 'model.', ''), teacher=('net_teacher.model.', )),
    'timm': {None: ('', 'module.')},
    'dinov2': {None: ('', 'module.', 'backbone.')},
    'dinov3': {None: ('', 'module.', 'backbone.')},
    'cotap-mm': {w: (p, 'module.' + p) for w, p in NETWORK_PREFIXES.items()},
}
DEFAULT_WHICH = {fmt: next(iter(ROOTS[fmt])) for fmt in SRC_FORMATS}


def select_network(obj, fmt, which, explicit, path):
    """The flat state dict of a loaded checkpoint that holds network ``which`` of layout
    ``fmt``, and where it was found (``'student'`` / ``'teacher'`` of a DINO-style full
    checkpoint, ``'state_dict'``, ``'model'`` or ``'<top level>'``)."""
    if not isinstance(obj, dict):
        raise CheckpointConversionError(
            f'{path}: expected a dict checkpoint, got a {type(obj).__name__}. {layout_hint(obj)}')
    full = fmt in ('dino', 'ibot', 'mugs')
    if full and ('student' in obj or 'teacher' in obj):
        if not isinstance(obj.get(which), dict):
            have = [k for k in ('student', 'teacher') if isinstance(obj.get(k), dict)]
            raise CheckpointConversionError(
                f'{path}: --which {which} asked for, but this full checkpoint holds only '
                f'{have}; pass --which {have[0] if have else "teacher"}')
        return obj[which], which
    if explicit and (None in ROOTS[fmt] or (full and which == 'student')):
        kind = 'a single network' if None in ROOTS[fmt] else \
            'a single backbone (the released teacher)'
        raise CheckpointConversionError(
            f'{path}: --which {which} asked for, but this {fmt} file holds {kind}, not '
            'student/teacher networks; drop --which (or use the *_full_checkpoint.pth / '
            'checkpoint.pth release, which has both)')
    sd = flat_state_dict(obj)
    return sd, next((k for k in ('state_dict', 'model') if obj.get(k) is sd), '<top level>')


def network_state(state, fmt, which, path):
    """``(root, state of the network under root, keys outside it)`` for network ``which``
    (None for one-network layouts) of a flat state dict of layout ``fmt``."""
    roots = ROOTS[fmt].get(None if None in ROOTS[fmt] else which)
    if roots is None:
        raise CheckpointConversionError(f'--which must be student or teacher, got {which!r}')
    root = next((r for r in roots if r + 'cls_token' in state or
                 r + 'embeddings.cls_token' in state), None)
    if root is None:
        have = [w for w, rs in ROOTS[fmt].items()
                if w != which and any(r + 'cls_token' in state for r in rs)]
        label = ' '.join(x for x in ('CoTAP' if fmt == 'cotap-mm' else fmt, which) if x)
        raise CheckpointConversionError(
            f'{path}: no {label} backbone found: expected a `cls_token` under one of the '
            f'prefixes {list(roots)}; keys that did not match: {first_keys(state)}. ' +
            (f'This checkpoint has the {have[0]} backbone; pass --which {have[0]}.' if have
             else layout_hint(state)))
    sub = OrderedDict((k[len(root):], v) for k, v in state.items() if k.startswith(root))
    return root, sub, [k for k in state if not k.startswith(root)]


def _dino_style_flavour(keys, root):
    """dino / ibot / mugs / timm / dinov2 / dinov3 for a DINO-layout ViT whose keys start with
    ``root``."""
    if root + 'pos_embed' not in keys:
        return 'dinov3'  # RoPE, no absolute positions (official or timm layout)
    if any(k.startswith(root) and k.endswith('.ls1.gamma') for k in keys) or \
            root + 'register_tokens' in keys or root + 'reg_token' in keys:
        return 'dinov2'  # LayerScale and/or registers (torch.hub or timm layout)
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
        root = next((r for r in reversed(_DINO) if r + 'cls_token' in keys), None)
        if root is not None:
            fmt = _dino_style_flavour(keys, root)
            fmt = 'dino' if fmt == 'timm' else fmt
            if fmt == 'dino' and any(k.startswith(('instance_head.', 'module.instance_head.',
                                                   'group_head.', 'module.group_head.'))
                                     for k in keys):
                fmt = 'mugs'
            return dict(format=fmt, which=nets,
                        description=f'{fmt}-style full checkpoint with {"/".join(nets)} '
                        f'networks (backbone under {root!r})')
    sd = flat_state_dict(obj)
    keys = set(sd)
    if any(k.startswith(('net.model.', 'net_teacher.model.')) for k in keys):
        which = [w for w, p in (('student', 'net.model.'), ('teacher', 'net_teacher.model.'))
                 if p + 'cls_token' in keys]
        return dict(format='cotap-official', which=which,
                    description='official CoTAP Lightning checkpoint (net. / net_teacher.)')
    if 'model.kernel' in keys and 'model.cls_token' in keys:
        return dict(format='cotap-official', which=['student'],
                    description='official CoTAP DinoFeaturizer state dict (model.)')
    if 'kernel' in keys and 'blocks.0.norm_in.weight' in keys:
        return dict(format='cotap-official', which=['student'],
                    description='bare official CoTAP ViT (kernel + per-block OAF norms)')
    if any(k.startswith(NETWORK_PREFIXES['teacher']) for k in keys) or (
            'backbone.layers.0.ln1.weight' in keys and any(
                k.startswith(('patch_head.', 'cls_head.')) for k in keys)):
        return dict(format='cotap-mm', which=['student', 'teacher'],
                    description='checkpoint of cotap_mm CoTAP pretraining '
                    '(use tools/model_converters/extract_backbone.py)')
    for root in ('backbone.', ''):
        if root + 'cls_token' in keys and root + 'layers.0.ln1.weight' in keys:
            return dict(format='mmpretrain', which=[],
                        description=f'already in mmpretrain VisionTransformer layout (prefix '
                        f'{root!r})')
    if 'model.cls_token' in keys:
        which = ['student', 'teacher'] if 'teacher.cls_token' in keys else ['student']
        return dict(format='leopart', which=which,
                    description='Leopart Lightning checkpoint (model. / teacher.)')
    for root in _DINO:
        if root + 'embeddings.register_tokens' in keys and \
                root + 'embeddings.position_embeddings' not in keys:
            return dict(format='dinov3', which=[], description='Hugging Face DINOv3ViTModel '
                        f'state dict (prefix {root!r})')
        if root + 'cls_token' in keys and root + 'blocks.0.norm1.weight' in keys:
            fmt = _dino_style_flavour(keys, root)
            one = fmt in ('timm', 'dinov2', 'dinov3')
            return dict(format=fmt, which=[] if one else ['teacher'],
                        description=f'{fmt}-style ViT state dict (prefix {root!r})')
    return None


def suggest_command(layout, src='SRC', dst='DST'):
    """The converter command line for a :func:`detect_layout` result (or None)."""
    fmt = layout and layout['format']
    if fmt == 'cotap-mm':
        return f'python tools/model_converters/extract_backbone.py {src} {dst}'
    if fmt in SRC_FORMATS:
        return f'python tools/model_converters/convert.py --src-format {fmt} {src} {dst}'
    return None


def layout_hint(obj):
    """One sentence for an error message: which layout ``obj`` looks like and what to run."""
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
