"""Which layout a checkpoint has (DINO, iBOT, Mugs, Leopart, timm, official CoTAP, ours), and
the converter command that turns it into a ``CoTAPVisionTransformer`` checkpoint.

Pure inspection of dict keys, so the strict loader (:class:`~cotap_mm.models.utils.CoTAPPretrained`)
can name the right command in its error without importing the converters.
"""
import re

from .checkpoint_loading import flat_state_dict

__all__ = ['SRC_FORMATS', 'DEFAULT_WHICH', 'OAF_NORM_KEY', 'NETWORK_PREFIXES', 'detect_layout',
           'suggest_command', 'layout_hint']

SRC_FORMATS = ('dino', 'ibot', 'mugs', 'leopart', 'cotap-official', 'timm', 'dinov2')

# Which network of a student/teacher checkpoint to convert when --which is not given:
# - DINO / iBOT / Mugs publish (and evaluate) the EMA teacher backbone;
# - Leopart's own evaluation and CoTAP's loader (which drops keys prefixed `teacher.`) use the
#   student (`model.`);
# - the official CoTAP evaluation loads the student (`net.`; it drops `net_teacher.*`,
#   docs/method.md §6.1).
DEFAULT_WHICH = {
    'dino': 'teacher',
    'ibot': 'teacher',
    'mugs': 'teacher',
    'leopart': 'student',
    'cotap-official': 'student',
    'timm': None,  # a single network
    'dinov2': None,  # the torch.hub / timm releases hold one network (the teacher)
}

# where a checkpoint of our own CoTAP pretraining keeps each network's backbone
NETWORK_PREFIXES = dict(student='backbone.', teacher='teacher.module.backbone.')

# per-block OAF norms of the official CoTAP ViT (only those of the last block are used)
OAF_NORM_KEY = r'^blocks\.(\d+)\.(norm_in|norm_out_patch|norm_out_cls)\.(weight|bias)$'


def _has(keys, *names):
    return all(n in keys for n in names)


def _dino_style_flavour(keys, root):
    """dino / ibot / mugs / timm / dinov2 for a DINO-layout ViT whose keys start with ``root``."""
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
    sd = flat_state_dict(obj)
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
    if 'kernel' in keys and any(re.match(OAF_NORM_KEY, k) for k in keys):
        return dict(format='cotap-official', which=['student'],
                    description='bare official CoTAP ViT (kernel + per-block OAF norms)')
    if any(k.startswith(NETWORK_PREFIXES['teacher']) for k in keys) or (
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
            return dict(format=fmt, which=[] if fmt in ('timm', 'dinov2') else ['teacher'],
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


def layout_hint(obj):
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

