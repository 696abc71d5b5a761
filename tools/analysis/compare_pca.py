"""Patch features of several backbones side by side: one PCA picture per checkpoint, on the
same images (docs/visualize.md).

    python tools/analysis/compare_pca.py CONFIG CKPT [CKPT ...] --images IMG_OR_DIR [...] \
        --out FILE.png [--titles T [T ...]] [--size 192] [--num-images 4] [--ann-dir DIR]

Details (the backbone per checkpoint, the images, the picture's columns): docs/visualize.md,
"Comparing backbones".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cotap_mm.datasets.folder_datasets import find_annotations, load_label_map  # noqa: E402
from cotap_mm.evaluation.backbone_maps import cotap_backbone_cfg  # noqa: E402
from cotap_mm.evaluation.features import patch_features  # noqa: E402
from cotap_mm.models.utils.loading import (get_normalization,  # noqa: E402
                                           load_checkpoint_backbone, load_config)
from cotap_mm.utils.images import collect_images, load_squashed  # noqa: E402
from cotap_mm.visualization import image_grid, label_tiles, pca_tiles, save_png  # noqa: E402
from tools._common.args import positive_int, tool_logger  # noqa: E402

TOOL = 'compare_pca'
BATCH = 8  # images per forward pass


def parse_args(argv: Optional[List[str]] = None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='PCA of the patch features of several backbones, '
                                'side by side on the same images')
    p.add_argument('config', metavar='CONFIG', help='config whose model is (or has as '
                   'model.backbone) a CoTAPVisionTransformer')
    p.add_argument('checkpoints', metavar='CKPT', nargs='+',
                   help="backbone files with 'backbone.*' keys, with or without oaf.* keys")
    p.add_argument('--images', metavar='IMG_OR_DIR', nargs='+', required=True,
                   help='image files and/or folders of images (sorted, not recursive)')
    p.add_argument('--out', metavar='FILE.png', required=True, help='the picture')
    p.add_argument('--titles', nargs='+', help='one column caption per CKPT (default: the '
                   'checkpoint file stems)')
    p.add_argument('--size', type=positive_int, default=192,
                   help='images are squashed to SIZE x SIZE (a multiple of the patch size)')
    p.add_argument('--num-images', type=positive_int, default=4, help='rows: the first N images')
    p.add_argument('--ann-dir', help='folder of label maps <stem>.png (default: ann_dir/<split>/ '
                   'of an mmseg layout, when every image has one)')
    p.add_argument('--prefix', default='backbone.', help='key prefix of the backbone in CKPT')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override CONFIG entries, e.g. model.backbone.num_prototypes=32')
    return p.parse_args(argv)


def check_args(args) -> None:
    """Refuse bad arguments before any model is built; each message names its argument."""
    for ckpt in args.checkpoints:
        if not osp.isfile(ckpt):
            raise FileNotFoundError(f'CKPT {ckpt!r} does not exist')
    if args.titles is not None and len(args.titles) != len(args.checkpoints):
        raise ValueError(f'--titles: {len(args.titles)} titles for {len(args.checkpoints)} '
                         f'checkpoints (CKPT); give one title per checkpoint')
    if args.ann_dir is not None and not osp.isdir(args.ann_dir):
        raise FileNotFoundError(f'--ann-dir {args.ann_dir!r} is not a folder')


def patch_maps(backbone: torch.nn.Module, x: torch.Tensor, device) -> List[np.ndarray]:
    """Normalised images (N, 3, S, S) -> N patch maps (S/p, S/p, C) float32."""
    backbone = backbone.to(device).eval()
    return list(torch.cat([patch_features(backbone, x[i:i + BATCH], device).cpu()
                           for i in range(0, len(x), BATCH)]).numpy())


def main(argv: Optional[List[str]] = None) -> str:
    """Write the picture; returns its path (``--out``)."""
    args = parse_args(argv)
    check_args(args)
    logger = tool_logger('cotap_compare_pca')
    cfg = load_config(args.config, args.cfg_options)
    cotap_backbone_cfg(cfg, f'CONFIG {args.config!r}')
    images = collect_images(args.images, arg='--images')[:args.num_images]  # sorted folders
    annotations = find_annotations(images, args.ann_dir, logger)
    mean, std = get_normalization(cfg)
    rgbs, tensors = zip(*[load_squashed(img, args.size, mean, std) for img in images])
    x = torch.stack(tensors)  # (N, 3, S, S)
    columns, titles = [list(rgbs)], ['image']
    if annotations is not None:
        columns.append(label_tiles([load_label_map(a, args.size) for a in annotations]))
        titles.append('labels')
    stems = [osp.splitext(osp.basename(c))[0] for c in args.checkpoints]
    for ckpt, title in zip(args.checkpoints, args.titles or stems):
        backbone = load_checkpoint_backbone(cfg, ckpt, args.prefix, logger)
        if args.size % backbone.patch_size:
            raise ValueError(f'--size {args.size} is not a multiple of the patch size '
                             f'{backbone.patch_size}')
        columns.append(pca_tiles(patch_maps(backbone, x, args.device), args.size))
        titles.append(title)
        del backbone
    grid = image_grid([list(row) for row in zip(*columns)], col_titles=titles)
    path = save_png(args.out, grid)
    logger.info(f'Wrote {path}: {len(images)} images x {len(titles)} columns ({", ".join(titles)})'
                f' at {args.size}x{args.size}')
    return path


if __name__ == '__main__':
    main()
