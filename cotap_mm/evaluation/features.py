"""Backbone building, checkpoint loading, folder datasets and feature extraction shared by the
probe tools (``tools/analysis/{knn,linear}_classification.py``, ``cluster_segmentation.py``,
``semantic_concentration.py``) and the feature pictures (``tools/analysis/compare_pca.py``,
``tools/visualize.py``).

- ``CONFIG``: any OpenMMLab python config with a ``model`` dict. The backbone is
  ``model.backbone`` when there is one (an mmseg ``EncoderDecoder`` / mmpretrain classifier or
  CoTAP algorithm config), else ``model`` itself (e.g. ``model = dict(type=
  'CoTAPVisionTransformer', arch='small')``). ``--cfg-options`` are merged first. The tools
  override only ``out_type`` (``'cls_token'`` or ``'featmap'``), ``out_indices=-1`` and
  ``init_cfg=None`` (the weights come from ``CHECKPOINT``), plus ``with_oaf=False`` where a
  tool builds a backbone for a checkpoint without the filter. The backbone is built under the
  config's ``default_scope`` (``'mmpretrain'`` if unset); ``CoTAPVisionTransformer`` is in both
  mmpretrain's and mmseg's registries.
- Normalisation: ``model.data_preprocessor.mean/std`` (0-255 RGB) when the config has them, else
  the ImageNet statistics.
- ``CHECKPOINT``: an mmengine file ``{'meta': ..., 'state_dict': {'backbone.<key>': ...}}`` (the
  output of ``tools/model_converters/extract_backbone.py``, or a full training checkpoint: keys
  outside the prefix are ignored and counted in the log). Loading is strict: missing,
  unexpected and shape-mismatched keys raise, listed; the only exceptions are ``pos_embed``
  (resized by mmpretrain's load hook) and ``oaf.*`` keys of a checkpoint loaded into a backbone
  built with ``with_oaf=False`` (dropped with a warning).
"""
import json
import math
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from cotap_mm.utils.fileio import atomic_open, atomic_save

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'IMG_EXTENSIONS', 'load_config', 'backbone_cfg',
    'build_backbone', 'read_backbone_state', 'load_backbone_state', 'load_backbone_weights',
    'get_normalization', 'collect_images', 'load_squashed', 'load_label_map',
    'ImageFolderDataset', 'SegFolderDataset', 'extract_features', 'dump_json_atomic',
    'format_table', 'add_common_args', 'add_classification_args', 'setup_tool', 'make_loader',
    'load_model_for_tool', 'json_safe', 'cached_features', 'classification_features',
    'add_segmentation_args', 'segmentation_features'
]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


# --------------------------------------------------------------------------- model


def load_config(config, cfg_options: Optional[dict] = None):
    """``CONFIG`` (a path or a loaded ``Config``) with ``cfg_options`` merged; it must have a
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
    """Build the backbone of ``config`` for feature extraction, in eval mode.

    Args:
        config (str | Config): Path of a python config, or a loaded ``Config``.
        cfg_options (dict, optional): ``--cfg-options`` to merge first.
        out_type (str): ``'cls_token'`` (B, C) or ``'featmap'`` (B, C, H/p, W/p).
        overrides (dict, optional): Entries set on the backbone dict last, whatever the config
            layout (e.g. ``dict(with_oaf=False)`` for a checkpoint without the filter).

    Returns:
        tuple[nn.Module, Config]: The backbone and the merged config.
    """
    import cotap_mm  # noqa: F401  (registers CoTAPVisionTransformer, applies torch.load compat)
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
        raise TypeError(f'CONFIG: backbone {bb_cfg["type"]!r} does not take `out_type`; the probes '
                        f'need a ViT with out_type=cls_token/featmap (CoTAPVisionTransformer or '
                        f'mmpretrain VisionTransformer): {e}') from e
    return backbone.eval(), cfg


def get_normalization(cfg) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) in 0-255 RGB: ``model.data_preprocessor``'s if given, else ImageNet's."""
    pre = cfg.get('model', {}).get('data_preprocessor', None) or cfg.get('data_preprocessor', None)
    if pre and pre.get('mean') is not None and pre.get('std') is not None:
        return tuple(float(m) for m in pre['mean']), tuple(float(s) for s in pre['std'])
    return IMAGENET_MEAN, IMAGENET_STD


def read_backbone_state(checkpoint: str,
                        prefix: str = 'backbone.',
                        logger=None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The ``prefix*`` tensors of ``CHECKPOINT``, prefix removed, and its ``meta``.

    Args:
        checkpoint (str): mmengine checkpoint ``{'state_dict': {...}}`` or a bare state dict.
        prefix (str): Key prefix of the backbone weights. ``''`` takes every key (a bare
            backbone state dict). Defaults to ``'backbone.'``.
        logger (MMLogger, optional): Where to report the keys outside ``prefix``.

    Returns:
        tuple[dict, dict]: The backbone state dict and ``meta`` of the checkpoint (or {}).

    Raises:
        FileNotFoundError, KeyError: a missing file, or no key with ``prefix``.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'CHECKPOINT {checkpoint!r} does not exist')
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    if not isinstance(ckpt, dict):
        raise KeyError(f'CHECKPOINT {checkpoint!r}: expected a dict, got {type(ckpt).__name__}')
    state = ckpt.get('state_dict', ckpt)
    meta = ckpt.get('meta', {}) if 'state_dict' in ckpt else {}
    sd = {k[len(prefix):]: v for k, v in state.items()
          if k.startswith(prefix) and torch.is_tensor(v)}
    if not sd:
        sample = ', '.join(list(state)[:5])
        raise KeyError(f'CHECKPOINT {checkpoint!r}: no key starts with {prefix!r} (first keys: '
                       f'{sample}). Extract the backbone with '
                       f'tools/model_converters/extract_backbone.py, or pass --prefix (\'\' for '
                       f'a bare backbone state dict)')
    others = sorted({k.split('.')[0] for k in state if not k.startswith(prefix)})
    if others and logger is not None:
        logger.info(f'CHECKPOINT: ignoring keys outside {prefix!r}: top-level {others}')
    return sd, meta


def load_backbone_state(backbone: torch.nn.Module,
                        state: Dict[str, torch.Tensor],
                        checkpoint: str,
                        logger=None) -> List[str]:
    """Load a backbone state dict (from :func:`read_backbone_state`) into ``backbone``, strictly.

    Args:
        backbone (nn.Module): The built backbone.
        state (dict): Its weights, without prefix (not modified).
        checkpoint (str): The file they come from, for the messages.
        logger (MMLogger, optional): Where to report.

    Returns:
        list[str]: The tolerated ``oaf.*`` keys that were dropped (backbone without the OAF).

    Raises:
        KeyError: with the list of missing / unexpected / mismatched keys.
    """
    sd = dict(state)
    own = backbone.state_dict()
    dropped = []
    if not getattr(backbone, 'with_oaf', True):
        dropped = sorted(k for k in sd if k.startswith('oaf.') and k not in own)
        for k in dropped:
            sd.pop(k)
        if dropped and logger is not None:
            logger.warning(f'CHECKPOINT has {len(dropped)} oaf.* keys but the backbone is built '
                           f'with with_oaf=False: they are not used (plain D-wide ViT features)')
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = sorted(f'{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}'
                        for k in set(sd) & set(own)
                        if sd[k].shape != own[k].shape and k != 'pos_embed')
    if missing or unexpected or mismatched:
        hint = ''
        if any(k.startswith('oaf.') for k in missing):
            hint = (' The checkpoint has no object-aware filter: build the backbone with '
                    '`--cfg-options model.backbone.with_oaf=False` (or model.with_oaf=False) to '
                    'evaluate the plain ViT.')
        raise KeyError(f'CHECKPOINT {checkpoint!r} does not match the backbone of CONFIG:\n'
                       f'  missing ({len(missing)}): {missing}\n'
                       f'  unexpected ({len(unexpected)}): {unexpected}\n'
                       f'  shape mismatch ({len(mismatched)}): {mismatched}\n'
                       f'Check arch / patch_size / with_oaf / num_prototypes in CONFIG.{hint}')
    backbone.load_state_dict(sd, strict=True)  # pos_embed is resized by mmpretrain's hook
    if logger is not None:
        logger.info(f'Loaded {len(sd)} backbone tensors from {checkpoint}')
    return dropped


def load_backbone_weights(backbone: torch.nn.Module,
                          checkpoint: str,
                          prefix: str = 'backbone.',
                          logger=None) -> Dict[str, object]:
    """Load ``CHECKPOINT``'s ``prefix*`` keys into ``backbone``, strictly
    (:func:`read_backbone_state` + :func:`load_backbone_state`).

    Args:
        backbone (nn.Module): The built backbone.
        checkpoint (str): mmengine checkpoint ``{'state_dict': {...}}`` or a bare state dict.
        prefix (str): Key prefix of the backbone weights. ``''`` takes every key (a bare
            backbone state dict). Defaults to ``'backbone.'``.
        logger (MMLogger, optional): Where to report.

    Returns:
        dict: ``meta`` of the checkpoint (or {}), ``num_loaded`` and ``dropped`` (tolerated
        ``oaf.*`` keys).

    Raises:
        FileNotFoundError, KeyError: with the list of missing / unexpected / mismatched keys.
    """
    sd, meta = read_backbone_state(checkpoint, prefix, logger)
    dropped = load_backbone_state(backbone, sd, checkpoint, logger)
    return dict(meta=meta, num_loaded=len(sd) - len(dropped), dropped=dropped)


# --------------------------------------------------------------------------- data


def _list_images(folder: str, suffixes: Sequence[str]) -> List[str]:
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(suffixes) and osp.isfile(osp.join(folder, f)))


def _to_tensor(img: Image.Image, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _open_rgb(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert('RGB')
    except Exception as e:  # name the file: a corrupt image in 1.28M is otherwise a hunt
        raise RuntimeError(f'cannot read image {path!r}: {e}') from e


def collect_images(paths: Sequence[str],
                   extensions: Sequence[str] = IMG_EXTENSIONS,
                   arg: str = 'IMAGE_OR_DIR') -> List[str]:
    """Image files from files and folders (a folder: its image files, sorted, not recursive).

    Raises:
        FileNotFoundError: a path that does not exist; ValueError: a folder without images.
        Both messages start with ``arg``, the argument the paths came from.
    """
    out = []
    for path in paths:
        if osp.isdir(path):
            found = [osp.join(path, f) for f in _list_images(path, extensions)]
            if not found:
                raise ValueError(f'{arg}: no images ({", ".join(extensions)}) in folder '
                                 f'{path!r}')
            out.extend(found)
        elif osp.isfile(path):
            out.append(path)
        else:
            raise FileNotFoundError(f'{arg}: image path not found: {path!r}')
    return out


def load_squashed(path: str, size: int, mean=IMAGENET_MEAN,
                  std=IMAGENET_STD) -> Tuple[np.ndarray, torch.Tensor]:
    """An image squashed to ``size`` x ``size`` (bilinear, as :class:`SegFolderDataset`).

    Returns:
        tuple: uint8 RGB (size, size, 3) and the normalised float32 tensor (3, size, size).
    """
    img = _open_rgb(path).resize((size, size), Image.BILINEAR)
    return np.asarray(img), _to_tensor(img, mean, std)


def load_label_map(path: str, size: int) -> np.ndarray:
    """A single-channel label PNG resized nearest to ``size`` x ``size``: int64 (size, size)."""
    with Image.open(path) as a:
        if a.mode not in ('L', 'P', 'I', 'I;16'):
            raise ValueError(f'annotation {path!r} has mode {a.mode}; expected a '
                             f'single-channel label PNG')
        return np.asarray(a.resize((size, size), Image.NEAREST)).astype(np.int64)


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageNet-style folder ``ROOT/<split>/<class>/*.<ext>`` with Resize + CenterCrop.

    Resize the shorter side to ``resize`` (bilinear, antialiased), centre-crop ``crop`` x
    ``crop``, normalise (spec §6.2: 256 / 224). Items: ``(img (3, crop, crop) float32, label)``.

    Args:
        root (str): Dataset root.
        split (str): Sub-folder (``'train'``, ``'val'``).
        classes (list[str], optional): Class names in label order; default: the sorted
            sub-folders of ``ROOT/<split>`` (pass the train classes for val).
        resize (int), crop (int): Defaults 256, 224.
        mean, std: 0-255 RGB normalisation.
    """

    def __init__(self, root, split, classes=None, resize=256, crop=224, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, extensions=IMG_EXTENSIONS):
        folder = osp.join(root, split)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'--data-root: {folder!r} is not a folder; expected '
                                    f'ROOT/{split}/<class>/*.jpg (ImageNet layout)')
        found = sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d)))
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f'{folder!r} has class folders not in the training classes: '
                             f'{unknown[:10]}')
        idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(osp.join(folder, c, f), idx[c]) for c in found
                        for f in _list_images(osp.join(folder, c), extensions)]
        if not self.samples:
            raise FileNotFoundError(f'no images ({", ".join(extensions)}) under '
                                    f'{folder!r}/<class>/')
        self.resize, self.crop, self.mean, self.std = resize, crop, mean, std

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from torchvision.transforms import functional as TF
        path, label = self.samples[i]
        img = TF.resize(_open_rgb(path), self.resize,
                        interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, self.crop)
        return _to_tensor(img, self.mean, self.std), label


class SegFolderDataset(torch.utils.data.Dataset):
    """mmseg-layout split ``ROOT/<img_dir>/<split>/*<img_suffix>`` + ``ROOT/<ann_dir>/<split>/
    *<seg_suffix>``, pairs matched by file stem.

    The image is squashed to ``size`` x ``size`` (bilinear, antialiased) and the label resized
    nearest to the same size (spec §6.1 validation: 448 -> 448). ``ann_file`` (optional, relative
    to ``root``) lists the file stems to use, one per line, in that order (mmseg's ``ann_file``,
    e.g. the STEGO curated lists of COCO-Stuff-27). Labels are ``0..C-1`` with 255
    ignored; ``reduce_zero_label`` maps 0 -> 255 and the others down by one (ADE20K). Items:
    ``(img (3, size, size) float32, label (size, size) int16)``.
    """

    def __init__(self, root, split='val', img_dir='img_dir', ann_dir='ann_dir', img_suffix='.jpg',
                 seg_suffix='.png', size=448, num_classes=None, reduce_zero_label=False,
                 ignore_index=255, mean=IMAGENET_MEAN, std=IMAGENET_STD, ann_file=None):
        idir, adir = osp.join(root, img_dir, split), osp.join(root, ann_dir, split)
        for d, opt in ((idir, '--img-dir'), (adir, '--ann-dir')):
            if not osp.isdir(d):
                raise FileNotFoundError(f'{opt}: {d!r} is not a folder (mmseg layout: '
                                        f'ROOT/img_dir/{split}/*.jpg, ROOT/ann_dir/{split}/*.png)')
        imgs = _list_images(idir, (img_suffix, ))
        if not imgs:
            raise FileNotFoundError(f'no *{img_suffix} images in {idir!r} (see --img-suffix)')
        if ann_file is not None:  # mmseg semantics: one file stem per line, relative to ROOT
            path = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
            if not osp.isfile(path):
                raise FileNotFoundError(f'--ann-file {path!r} does not exist')
            with open(path) as f:
                stems = [ln.strip() for ln in f if ln.strip()]
            have = {f[:-len(img_suffix)]: f for f in imgs}
            absent = [st for st in stems if st not in have]
            if absent:
                raise FileNotFoundError(f'--ann-file {path!r} lists {len(absent)} images not in '
                                        f'{idir!r}, e.g. {absent[:3]}')
            imgs = [have[st] for st in stems]
        self.samples = []
        for f in imgs:
            ann = osp.join(adir, f[:-len(img_suffix)] + seg_suffix)
            if not osp.isfile(ann):
                raise FileNotFoundError(f'annotation {ann!r} of image {f!r} is missing '
                                        f'(see --seg-suffix)')
            self.samples.append((osp.join(idir, f), ann))
        self.size, self.num_classes, self.mean, self.std = size, num_classes, mean, std
        self.reduce_zero_label, self.ignore_index = reduce_zero_label, ignore_index

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        img_path, ann_path = self.samples[i]
        _, img = load_squashed(img_path, self.size, self.mean, self.std)
        lab = load_label_map(ann_path, self.size)
        if self.reduce_zero_label:
            lab = np.where(lab == 0, 255, lab - 1)
            lab[lab == 254] = 255
        if self.num_classes is not None:
            bad = (lab != self.ignore_index) & ((lab < 0) | (lab >= self.num_classes))
            if bad.any():
                raise ValueError(f'annotation {ann_path!r} holds labels {np.unique(lab[bad])[:10]}'
                                 f' outside [0, {self.num_classes}) and != {self.ignore_index}: '
                                 f'check --num-classes / --reduce-zero-label')
        # int16 halves/quarters the memory of a stacked val set (448^2 labels per image)
        return img, torch.from_numpy(lab.astype(np.int16))


# --------------------------------------------------------------------------- extraction


@torch.no_grad()
def extract_features(backbone: torch.nn.Module,
                     loader,
                     device='cpu',
                     post: Optional[Callable] = None,
                     desc: str = 'features',
                     logger=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over ``loader`` and stack its (last) outputs and the targets.

    Args:
        backbone (nn.Module): Returns a tuple of outputs; the last one is used.
        loader (DataLoader): Yields ``(imgs (B, 3, H, W), targets)``.
        device (str | torch.device): Where the backbone runs.
        post (callable, optional): Applied to each (B, ...) output batch (e.g. to move it to
            the CPU in half precision); default: ``.float().cpu()``.
        desc (str): Name shown in the log.

    Returns:
        tuple[Tensor, Tensor]: features (N, ...) and targets (N, ...), on the CPU.
    """
    from mmengine.utils import ProgressBar
    backbone = backbone.to(device).eval()
    if logger is not None:
        logger.info(f'Extracting {desc}: {len(loader.dataset)} images')
    bar = ProgressBar(len(loader.dataset))
    feats, targets = [], []
    for imgs, tgt in loader:
        out = backbone(imgs.to(device, non_blocking=True))
        out = out[-1] if isinstance(out, (tuple, list)) else out
        feats.append(post(out) if post is not None else out.float().cpu())
        targets.append(torch.as_tensor(tgt))
        for _ in range(imgs.shape[0]):
            bar.update()
    print(flush=True)  # the progress bar leaves the cursor on its line
    return torch.cat(feats), torch.cat(targets)


# --------------------------------------------------------------------------- output


def dump_json_atomic(obj, path: str) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`cotap_mm.utils.fileio.atomic_open`)."""
    path = osp.abspath(path)
    os.makedirs(osp.dirname(path), exist_ok=True)
    with atomic_open(path, 'w') as f:
        json.dump(obj, f, indent=2, default=str)  # e.g. odd types in checkpoint meta
        f.write('\n')
    return path


def format_table(title: str, columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A prettytable string (floats with two decimals) for the log and the console."""
    from prettytable import PrettyTable
    t = PrettyTable(list(columns))
    t.title = title
    for r in rows:
        t.add_row([f'{v:.2f}' if isinstance(v, float) else v for v in r])
    return t.get_string()


# --------------------------------------------------------------------------- tool plumbing


def add_common_args(parser, default_batch_size=64):
    """The arguments every probe tool shares (``CONFIG CHECKPOINT`` and friends)."""
    from mmengine.config import DictAction
    parser.add_argument('config', help='python config with `model` (see docs/probes.md)')
    parser.add_argument('checkpoint', help="mmengine checkpoint with 'backbone.*' keys")
    parser.add_argument('--prefix', default='backbone.',
                        help="key prefix of the backbone in CHECKPOINT ('' for a bare state dict)")
    parser.add_argument('--work-dir', help='where the log and the JSON go (default: '
                        './work_dirs/<config name>)')
    parser.add_argument('--out', help='JSON result file (default: WORK_DIR/<tool>.json)')
    parser.add_argument('--batch-size', type=int, default=default_batch_size,
                        help='images per forward pass')
    parser.add_argument('--num-workers', type=int, default=4)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override CONFIG entries, e.g. model.backbone.with_oaf=False')
    return parser


def setup_tool(args, tool: str):
    """Work dir, ``MMLogger`` (console + ``WORK_DIR/<tool>_<time>.log``) and the JSON path."""
    import time

    from mmengine.logging import MMLogger
    work_dir = args.work_dir or osp.join('./work_dirs',
                                         osp.splitext(osp.basename(args.config))[0])
    os.makedirs(work_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    logger = MMLogger.get_instance(f'{tool}-{stamp}-{time.perf_counter_ns()}',
                                   logger_name='cotap_mm',
                                   log_file=osp.join(work_dir, f'{tool}_{stamp}.log'),
                                   log_level='INFO')
    out = args.out or osp.join(work_dir, f'{tool}.json')
    return work_dir, logger, out


def make_loader(dataset, args, shuffle=False):
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=shuffle, num_workers=args.num_workers,
        pin_memory=str(args.device).startswith('cuda'), drop_last=False)


def load_model_for_tool(args, out_type: str, logger):
    """:func:`build_backbone` + :func:`load_backbone_weights` from the tool's arguments."""
    backbone, cfg = build_backbone(args.config, args.cfg_options, out_type=out_type)
    info = load_backbone_weights(backbone, args.checkpoint, prefix=args.prefix, logger=logger)
    logger.info(f'Backbone {type(backbone).__name__} (out_type={out_type!r}, '
                f'with_oaf={getattr(backbone, "with_oaf", None)}), '
                f'{sum(p.numel() for p in backbone.parameters()) / 1e6:.2f}M parameters')
    return backbone, cfg, info


def json_safe(obj):
    """Make ``obj`` strict-JSON-friendly: tuples to lists, numpy/tensor values to Python, NaN /
    inf to ``None`` (e.g. the IoU of a class absent from prediction and label)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if torch.is_tensor(obj) or isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


def cached_features(cache: Optional[str], key: dict, compute: Callable, logger=None):
    """Load ``(train..., val...)`` tensors from ``cache`` if its ``key`` matches, else compute
    them and save them there (atomically). ``cache=None`` just computes.

    ``key`` should name everything the features depend on (config, checkpoint, sizes); a cache
    with another key raises instead of silently serving stale features.
    """
    if cache is None:
        return compute()
    if osp.isfile(cache):
        blob = torch.load(cache, map_location='cpu', weights_only=True)
        if blob.get('key') != json.loads(json.dumps(key, default=str)):
            raise ValueError(f'--feature-cache {cache!r} was made with {blob.get("key")}, not '
                             f'{key}: delete it or give another path')
        if logger is not None:
            logger.info(f'Loaded features from {cache}')
        return tuple(blob['tensors'])
    tensors = compute()
    os.makedirs(osp.dirname(osp.abspath(cache)), exist_ok=True)
    atomic_save(dict(key=json.loads(json.dumps(key, default=str)), tensors=list(tensors)), cache)
    if logger is not None:
        logger.info(f'Saved features to {cache}')
    return tensors


def add_classification_args(parser):
    """Data arguments of the classification probes (ImageNet-style folders)."""
    parser.add_argument('--data-root', required=True,
                        help='ImageNet-style root: ROOT/train/<class>/*.jpg, ROOT/val/<class>/*')
    parser.add_argument('--train-split', default='train')
    parser.add_argument('--val-split', default='val')
    parser.add_argument('--resize', type=int, default=256, help='shorter side before the crop')
    parser.add_argument('--crop', type=int, default=224, help='centre crop size')
    parser.add_argument('--feature-dtype', default='float32', choices=['float32', 'float16'],
                        help='storage of the extracted features (float16 halves the memory)')
    parser.add_argument('--feature-cache',
                        help='a .pth file to save the features to / load them from, so that '
                        'the kNN and linear tools extract them only once')
    return parser


def classification_features(args, logger):
    """Train and val CLS features of the tool's ``--data-root``.

    Returns:
        tuple: ``(train_feats (N, C), train_labels (N,), val_feats (M, C), val_labels (M,),
        classes, load_info)``, tensors on the CPU.
    """
    dtype = getattr(torch, args.feature_dtype)
    backbone, cfg, info = load_model_for_tool(args, 'cls_token', logger)
    mean, std = get_normalization(cfg)
    kw = dict(resize=args.resize, crop=args.crop, mean=mean, std=std)
    train_set = ImageFolderDataset(args.data_root, args.train_split, **kw)
    val_set = ImageFolderDataset(args.data_root, args.val_split, classes=train_set.classes, **kw)
    logger.info(f'{len(train_set.classes)} classes, {len(train_set)} train / {len(val_set)} val '
                f'images; Resize({args.resize}) + CenterCrop({args.crop}), mean={mean}, std={std}')

    def compute():
        post = lambda out: out.to(dtype).cpu()  # noqa: E731
        tf, ty = extract_features(backbone, make_loader(train_set, args), args.device, post,
                                  'train CLS features', logger)
        vf, vy = extract_features(backbone, make_loader(val_set, args), args.device, post,
                                  'val CLS features', logger)
        return tf, ty, vf, vy

    ckpt = osp.abspath(args.checkpoint)
    key = dict(config=osp.abspath(args.config), cfg_options=args.cfg_options or {},
               checkpoint=ckpt, checkpoint_mtime=os.stat(ckpt).st_mtime,
               data_root=osp.abspath(args.data_root), splits=[args.train_split, args.val_split],
               num_images=[len(train_set), len(val_set)], resize=args.resize, crop=args.crop,
               dtype=args.feature_dtype)
    tf, ty, vf, vy = cached_features(args.feature_cache, key, compute, logger)
    return tf, ty.long(), vf, vy.long(), train_set.classes, info


def add_segmentation_args(parser):
    """Data arguments of the segmentation probes (mmseg-layout folders, see
    :class:`SegFolderDataset`)."""
    parser.add_argument('--data-root', required=True, help='mmseg-layout dataset root')
    parser.add_argument('--num-classes', type=int, required=True, help='C (labels 0..C-1)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--img-dir', default='img_dir')
    parser.add_argument('--ann-dir', default='ann_dir')
    parser.add_argument('--img-suffix', default='.jpg')
    parser.add_argument('--seg-suffix', default='.png')
    parser.add_argument('--ann-file', help='text file (relative to ROOT) listing the image stems '
                        'to use, one per line (e.g. '
                        'curated/val2017/Coco164kFull_Stuff_Coarse_7.txt)')
    parser.add_argument('--reduce-zero-label', action='store_true',
                        help='label 0 -> 255 and the others minus 1 (ADE20K)')
    parser.add_argument('--ignore-index', type=int, default=255)
    parser.add_argument('--size', type=int, default=448, help='square input and label size')
    parser.add_argument('--feature-dtype', default='float32', choices=['float32', 'float16'],
                        help='storage of the extracted patch features')
    return parser


def segmentation_features(args, logger, normalize: bool = False):
    """Patch maps and labels of the tool's segmentation split (:func:`add_segmentation_args`).

    Args:
        args (Namespace): The tool's arguments (common + segmentation).
        logger (MMLogger): Where to report.
        normalize (bool): L2-normalise each patch feature. Defaults to False.

    Returns:
        tuple: ``(feats (N, h, w, C) in --feature-dtype, labels (N, size, size) int16,
        load_info)`` on the CPU; ``feats.view(-1, C)`` is the (N*h*w, C) patch matrix, rows
        in image order, without a copy.
    """
    backbone, cfg, info = load_model_for_tool(args, 'featmap', logger)
    mean, std = get_normalization(cfg)
    dataset = SegFolderDataset(
        args.data_root, args.split, args.img_dir, args.ann_dir, args.img_suffix,
        args.seg_suffix, size=args.size, num_classes=args.num_classes,
        reduce_zero_label=args.reduce_zero_label, ignore_index=args.ignore_index, mean=mean,
        std=std, ann_file=args.ann_file)
    logger.info(f'{len(dataset)} {args.split} images squashed to {args.size}x{args.size}, '
                f'{args.num_classes} classes')
    dtype = getattr(torch, args.feature_dtype)

    def post(out):  # (B, C, h, w) -> (B, h, w, C) on the CPU
        out = out.float()
        out = torch.nn.functional.normalize(out, dim=1) if normalize else out
        return out.permute(0, 2, 3, 1).contiguous().to(dtype).cpu()

    feats, labels = extract_features(backbone, make_loader(dataset, args), args.device, post,
                                     'patch features', logger)
    return feats, labels, info
