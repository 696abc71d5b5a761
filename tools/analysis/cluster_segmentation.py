"""Unsupervised segmentation probe: k-means over frozen patch features + cluster matching
(the STEGO / Leopart protocol).

    python tools/analysis/cluster_segmentation.py CONFIG CHECKPOINT --data-root ROOT
        --num-classes 27 [--num-clusters 27 100 300 500] [--split val] [--size 448]

Details: docs/probes.md, "Cluster segmentation".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import (assign_clusters, confusion_matrix,  # noqa: E402
                                            faiss_kmeans, match_confusion)
from tools._common.args import positive_int  # noqa: E402
from tools._common.probes import (add_common_args, add_segmentation_args,  # noqa: E402
                                  segmentation_features, setup_tool, write_results)

TOOL = 'cluster_segmentation'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='k-means cluster probe for unsupervised segmentation')
    add_common_args(p, default_batch_size=16)
    add_segmentation_args(p)
    p.add_argument('--num-clusters', type=positive_int, nargs='+',
                   help='K values; default: C (Hungarian). Overclustering: e.g. 100 300 500')
    p.add_argument('--match', default='auto', choices=['auto', 'hungarian', 'majority'],
                   help='auto: Hungarian if K <= C, else many-to-one majority')
    p.add_argument('--niter', type=positive_int, default=50, help='k-means iterations')
    p.add_argument('--nredo', type=positive_int, default=1, help='k-means restarts (best kept)')
    p.add_argument('--max-points-per-centroid', type=int, default=256,
                   help='faiss trains on at most K * this many random patches')
    p.add_argument('--eval-chunk', type=int, default=64, help='images per scoring block')
    args = p.parse_args(argv)
    args.num_clusters = args.num_clusters or [args.num_classes]
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    logger.info(f'k-means with K in {args.num_clusters}')
    # each patch L2-normalised, so that the (N*h*w, C) matrix for k-means is a view of feats
    feats, labels, info = segmentation_features(args, logger, normalize=True)
    N, h, w, C_feat = feats.shape
    flat = feats.view(-1, C_feat)  # (N*h*w, C_feat)
    logger.info(f'{flat.shape[0]} patches ({N} images x {h}x{w}), {C_feat}-d')
    device = torch.device(args.device)
    rows, runs = [], []
    for K in args.num_clusters:
        logger.info(f'k-means K={K}: faiss, niter={args.niter}, nredo={args.nredo}, '
                    f'seed={args.seed}')
        centroids = faiss_kmeans(flat, K, niter=args.niter, nredo=args.nredo, seed=args.seed,
                                 max_points_per_centroid=args.max_points_per_centroid,
                                 use_gpu=False)
        assign = assign_clusters(flat, centroids, device=device).view(N, h, w)
        # accumulate the (K+1, C) cluster confusion image block by image block, so the
        # upsampled (N, size, size) cluster map never exists at once
        cc = torch.zeros((K + 1, args.num_classes), dtype=torch.long)
        for s in range(0, N, args.eval_chunk):
            a = assign[s:s + args.eval_chunk, None].to(device).float()
            a = F.interpolate(a, size=labels.shape[-2:], mode='nearest')[:, 0].long()
            cc += confusion_matrix(a, labels[s:s + args.eval_chunk].to(device), K,
                                   args.num_classes, args.ignore_index).cpu()
        mapping, m = match_confusion(cc[:-1], args.num_classes, args.match, miss=cc[-1])
        runs.append(dict(num_clusters=K, **m, cluster_to_class=mapping.tolist(),
                         clusters_used=int((torch.bincount(assign.flatten(), minlength=K) > 0)
                                           .sum())))
        rows.append([K, m['method'], m['mIoU'], m['aAcc'], m['num_valid_classes']])
        logger.info(f'K={K} ({m["method"]}): mIoU {m["mIoU"]:.2f}, aAcc {m["aAcc"]:.2f}')
    logger.info('\n' + format_table('Cluster segmentation (matched on the evaluated split)',
                                    ['K', 'matching', 'mIoU %', 'aAcc %', 'classes scored'],
                                    rows))
    results = dict(
        tool=TOOL,
        protocol='faiss k-means on L2-normalised patch features of the split; clusters matched '
        'to classes on the same split (Hungarian K<=C, majority K>C); mmseg IoU semantics',
        config=args.config, checkpoint=args.checkpoint, checkpoint_meta=info['meta'],
        data_root=args.data_root, split=args.split, num_images=N, num_classes=args.num_classes,
        size=args.size, feature_dim=C_feat, patch_grid=[h, w], niter=args.niter,
        nredo=args.nredo, seed=args.seed, max_points_per_centroid=args.max_points_per_centroid,
        runs=runs)
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
