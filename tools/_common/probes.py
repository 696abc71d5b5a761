"""The arguments, logging and data plumbing every probe tool of ``tools/analysis/`` shares:
``CONFIG CHECKPOINT`` and friends, the work dir and log, and the train/val features of an
ImageNet-style or mmseg-layout folder (docs/probes.md)."""
import json
import os
import os.path as osp

import torch

from cotap_mm.datasets.folder_datasets import ImageFolderDataset, SegFolderDataset
from cotap_mm.engine.launch import default_work_dir
from cotap_mm.evaluation.features import cached_features, extract_features, json_safe
from cotap_mm.models.utils.loading import (build_backbone, get_normalization,
                                          load_backbone_weights)
from cotap_mm.utils.fileio import atomic_write_text
from .args import non_negative_int, positive_int

__all__ = ['add_common_args', 'setup_tool', 'write_results', 'make_loader', 'load_model_for_tool',
           'add_classification_args', 'classification_features', 'add_segmentation_args',
           'segmentation_dataset', 'segmentation_features']


def add_common_args(parser, default_batch_size=64):
    """The arguments every probe tool shares (``CONFIG CHECKPOINT`` and friends)."""
    from mmengine.config import DictAction
    parser.add_argument('config', help='python config with `model` (see docs/probes.md)')
    parser.add_argument('checkpoint', help="mmengine checkpoint with 'backbone.*' keys")
    parser.add_argument('--prefix', default='backbone.',
                        help="key prefix of the backbone in CHECKPOINT ('' for a bare state dict)")
    parser.add_argument('--unsafe-pickle', action='store_true',
                        help='load a CHECKPOINT that pickles Python objects (weights_only=False): '
                        'it can run code stored in the file; only for files you trust')
    parser.add_argument('--work-dir', help='where the log and the JSON go (default: '
                        './work_dirs/<config name>)')
    parser.add_argument('--out', help='JSON result file (default: WORK_DIR/<tool>.json)')
    parser.add_argument('--batch-size', type=positive_int, default=default_batch_size,
                        help='images per forward pass')
    parser.add_argument('--num-workers', type=non_negative_int, default=4)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override CONFIG entries, e.g. model.backbone.with_oaf=False')
    return parser


def setup_tool(args, tool: str):
    """Seed torch with ``--seed``; make the work dir, the ``MMLogger`` (console +
    ``WORK_DIR/<tool>_<time>.log``) and the JSON path."""
    import time

    from mmengine.logging import MMLogger
    torch.manual_seed(args.seed)
    work_dir = args.work_dir or default_work_dir(args.config)
    os.makedirs(work_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%d_%H%M%S')
    logger = MMLogger.get_instance(f'{tool}-{stamp}-{time.perf_counter_ns()}',
                                   logger_name='cotap_mm',
                                   log_file=osp.join(work_dir, f'{tool}_{stamp}.log'),
                                   log_level='INFO')
    out = args.out or osp.join(work_dir, f'{tool}.json')
    return work_dir, logger, out


def write_results(results: dict, out: str, logger) -> str:
    """The tool's results as strict JSON at ``out`` (atomically); returns the path written."""
    # default=str: e.g. odd types in checkpoint meta
    path = atomic_write_text(osp.abspath(out), json.dumps(json_safe(results), indent=2,
                                                          default=str) + '\n')
    logger.info(f'Results written to {path}')
    return path


def make_loader(dataset, args, shuffle=False):
    return torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=shuffle, num_workers=args.num_workers,
        pin_memory=str(args.device).startswith('cuda'), drop_last=False)


def load_model_for_tool(args, out_type: str, logger):
    """:func:`build_backbone` + :func:`load_backbone_weights` from the tool's arguments."""
    backbone, cfg = build_backbone(args.config, args.cfg_options, out_type=out_type)
    info = load_backbone_weights(backbone, args.checkpoint, prefix=args.prefix,
                                 unsafe_pickle=getattr(args, 'unsafe_pickle', False),
                                 logger=logger)
    logger.info(f'Backbone {type(backbone).__name__} (out_type={out_type!r}, '
                f'with_oaf={getattr(backbone, "with_oaf", None)}), '
                f'{sum(p.numel() for p in backbone.parameters()) / 1e6:.2f}M parameters')
    return backbone, cfg, info


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
    parser.add_argument('--num-classes', type=positive_int, required=True,
                        help='C (labels 0..C-1)')
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
    parser.add_argument('--size', type=positive_int, default=448,
                        help='square input and label size')
    parser.add_argument('--feature-dtype', default='float32', choices=['float32', 'float16'],
                        help='storage of the extracted patch features')
    return parser


def segmentation_dataset(args, cfg, split, dataset=SegFolderDataset, **kwargs):
    """The ``split`` of the tool's segmentation data (:func:`add_segmentation_args`) as
    ``dataset``, normalised as ``cfg``'s model is; ``kwargs`` go to ``dataset``."""
    mean, std = get_normalization(cfg)
    return dataset(args.data_root, split, args.img_dir, args.ann_dir, args.img_suffix,
                   args.seg_suffix, size=args.size, num_classes=args.num_classes,
                   reduce_zero_label=args.reduce_zero_label, ignore_index=args.ignore_index,
                   mean=mean, std=std, **kwargs)


def segmentation_features(args, logger, normalize: bool = False, model=None):
    """Patch maps and labels of the tool's segmentation split (:func:`add_segmentation_args`).

    Args:
        args (Namespace): The tool's arguments (common + segmentation).
        logger (MMLogger): Where to report.
        normalize (bool): L2-normalise each patch feature. Defaults to False.
        model (tuple, optional): ``(backbone, cfg, load_info)`` of
            ``load_model_for_tool(args, 'featmap', logger)`` already built, for a tool that
            extracts several splits with one backbone; built here when None.

    Returns:
        tuple: ``(feats (N, h, w, C) in --feature-dtype, labels (N, size, size) int16,
        load_info)`` on the CPU; ``feats.view(-1, C)`` is the (N*h*w, C) patch matrix, rows
        in image order, without a copy.
    """
    backbone, cfg, info = model or load_model_for_tool(args, 'featmap', logger)
    dataset = segmentation_dataset(args, cfg, args.split, ann_file=args.ann_file)
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
