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

from cotap_mm.evaluation.features import UnreadableImagesError  # noqa: E402,F401 (raised)
from cotap_mm.evaluation.knn_builder import build_knn_file  # noqa: E402
from cotap_mm.utils.images import IMG_EXTENSIONS  # noqa: E402
from tools._common.args import tool_logger  # noqa: E402


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


def main(argv: Optional[List[str]] = None) -> np.ndarray:
    args = parse_args(argv)
    return build_knn_file(args.image_dir, args.out, tool_logger('precompute_knn'),
                          args.checkpoint, args.prefix, args.unsafe_pickle, args.arch,
                          args.patch_size, args.k, args.batch_size, args.image_size,
                          args.num_workers, args.extensions, args.device)


if __name__ == '__main__':
    main()
