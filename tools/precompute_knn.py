"""Precompute the kNN neighbour file of an image folder (STEGO ``precompute_knns.py`` format).

    python tools/precompute_knn.py IMAGE_DIR OUT_NPZ [--checkpoint CKPT] [--arch base] [--k 30]

Without ``--checkpoint`` the ViT is random: only for tests. Details: docs/data.md, "Producing
the kNN files".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout

from cotap_mm.datasets.image_list import list_images  # noqa: E402
from cotap_mm.datasets.knn_file import knn_search, write_knn_file  # noqa: E402
from cotap_mm.evaluation.features import (UnreadableImagesError,  # noqa: E402,F401 (raised)
                                          image_embeddings)
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer  # noqa: E402
from cotap_mm.models.utils.loading import load_backbone_weights, read_checkpoint  # noqa: E402
from cotap_mm.utils.images import IMG_EXTENSIONS  # noqa: E402
from cotap_mm.utils.logger import tool_logger  # noqa: E402


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='Precompute the STEGO-format kNN file of IMAGE_DIR')
    p.add_argument('image_dir', help='image folder, scanned recursively (sorted)')
    p.add_argument('out', help='output .npz (key "nns", int64 [N, k], self in column 0)')
    p.add_argument('--checkpoint', help='backbone checkpoint (mmengine or bare state dict)')
    p.add_argument('--prefix',
                   help='state-dict key prefix of the backbone in the checkpoint (default: '
                        '"backbone.", or every key of a bare backbone state dict)')
    p.add_argument('--unsafe-pickle', action='store_true',
                   help='load a --checkpoint that pickles Python objects (weights_only=False): '
                   'it can run code stored in the file; only for files you trust')
    p.add_argument('--arch', choices=['tiny', 'small', 'base'],
                   help='ViT size (default: the `arch` recorded in the --checkpoint meta by '
                        'tools/model_converters, else base)')
    p.add_argument('--patch-size', type=int,
                   help='patch size (default: from the --checkpoint meta, else 16)')
    p.add_argument('--k', type=int, default=30, help='neighbours per image, self included')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--image-size', type=int, default=224)
    p.add_argument('--num-workers', type=int, default=4)
    p.add_argument('--extensions', nargs='+', default=list(IMG_EXTENSIONS))
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return p.parse_args(argv)


def _arch_from_args(args, ckpt, logger):
    """(arch, patch_size): the command line's, else the meta of the loaded --checkpoint ``ckpt``
    (written by tools/model_converters), else ViT-B/16."""
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    meta = meta if isinstance(meta, dict) else {}
    arch = args.arch or meta.get('arch') or 'base'
    patch_size = args.patch_size or meta.get('patch_size') or 16
    if meta.get('arch') and not args.arch:
        logger.info(f'arch {arch}, patch size {patch_size} from the meta of {args.checkpoint}')
    return arch, patch_size


def main(argv: Optional[List[str]] = None) -> np.ndarray:
    args = parse_args(argv)
    name = 'precompute_knn'
    logger = tool_logger(name)
    paths = list_images(args.image_dir, args.extensions)
    if not paths:
        raise FileNotFoundError(f'precompute_knn: no image with extensions {args.extensions} '
                                f'under {args.image_dir!r}; check the folder or --extensions')
    k = args.k
    if k > len(paths):
        logger.warning(f'--k {k} > number of images {len(paths)}: using k={len(paths)}')
        k = len(paths)
    ckpt = read_checkpoint(args.checkpoint, args.unsafe_pickle) if args.checkpoint else None
    arch, patch_size = _arch_from_args(args, ckpt, logger)
    model = CoTAPVisionTransformer(arch=arch, patch_size=patch_size,
                                   img_size=args.image_size, with_oaf=False, out_type='raw')
    if args.checkpoint:
        # the student's backbone.*, or --prefix; a bare state dict is taken whole
        load_backbone_weights(model, args.checkpoint, prefix=args.prefix, ckpt=ckpt,
                              logger=logger)
    else:
        logger.warning('!' * 78 + '\nprecompute_knn: NO --checkpoint given: the features come '
                       'from a RANDOMLY INITIALISED ViT, so the neighbours are meaningless. '
                       'Use this for tests only.\n' + '!' * 78)
    model.eval().to(args.device)
    logger.info(f'{len(paths)} images under {args.image_dir}; arch={arch}/'
                f'{patch_size}, image size {args.image_size}, k={k}')
    feats = image_embeddings(model, paths, args.image_size, args.batch_size, args.num_workers,
                             args.device, logger, tool='precompute_knn')
    nns = knn_search(feats, k)
    write_knn_file(args.out, nns, paths, args.image_dir)
    logger.info(f'Wrote {args.out}: nns {nns.shape} {nns.dtype}')
    return nns


if __name__ == '__main__':
    main()
