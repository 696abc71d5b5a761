"""Converged dense linear probe: a 1x1-conv classifier of frozen patch features fitted to
convergence with full-batch L-BFGS on a labelled split, scored on another.

    python tools/analysis/linear_segmentation.py CONFIG CHECKPOINT --data-root ROOT
        --num-classes C [--train-split train] [--split val] [--size 448]

Details: docs/probes.md, "Converged linear segmentation (L-BFGS)".
"""
import argparse
import copy
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import (confusion_matrix,  # noqa: E402
                                            fit_dense_linear_probe, segmentation_metrics)
from tools._common.args import non_negative_float, positive_int  # noqa: E402
from tools._common.probes import (add_common_args, add_segmentation_args,  # noqa: E402
                                  load_model_for_tool, segmentation_features, setup_tool,
                                  write_results)

TOOL = 'linear_segmentation'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='converged (L-BFGS) dense linear probe')
    add_common_args(p, default_batch_size=16)
    add_segmentation_args(p)
    p.add_argument('--train-split', default='train', help='split the probe is fitted on '
                   '(--split is the one it is scored on)')
    p.add_argument('--iters', type=positive_int, default=200, help='L-BFGS iterations at most')
    p.add_argument('--weight-decay', type=non_negative_float, default=1e-4, help='L2 penalty on the weights')
    p.add_argument('--chunk', type=positive_int, default=32, help='images per loss/score block')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    model = load_model_for_tool(args, 'featmap', logger)  # one backbone for both splits
    fit_args = copy.copy(args)
    fit_args.split = args.train_split
    fit_feats, fit_labels, info = segmentation_features(fit_args, logger, model=model)
    val_feats, val_labels, _ = segmentation_features(args, logger, model=model)
    N, h, w, C_feat = fit_feats.shape
    device = torch.device(args.device)
    logger.info(f'L-BFGS linear probe: {N} {args.train_split} images ({h}x{w} patches, '
                f'{C_feat}-d) -> {len(val_feats)} {args.split} images, at most {args.iters} '
                f'iterations, weight decay {args.weight_decay}')
    predict = fit_dense_linear_probe(
        fit_feats.permute(0, 3, 1, 2).float().to(device), fit_labels.long().to(device),
        args.num_classes, iters=args.iters, ignore_index=args.ignore_index, normalize=True,
        seed=args.seed, optimizer='lbfgs', weight_decay=args.weight_decay, chunk=args.chunk)
    C = args.num_classes
    conf = torch.zeros((C + 1, C), dtype=torch.long)
    for s in range(0, len(val_feats), args.chunk):
        x = val_feats[s:s + args.chunk].permute(0, 3, 1, 2).float().to(device)
        pred = predict(x).argmax(1).cpu()
        conf += confusion_matrix(pred, val_labels[s:s + args.chunk].long(), C, C,
                                 args.ignore_index)
    m = segmentation_metrics(conf)
    logger.info('\n' + format_table('Linear segmentation (L-BFGS, converged)',
                                    ['split', 'mIoU %', 'aAcc %', 'classes scored'],
                                    [[args.split, m['mIoU'], m['aAcc'],
                                      m['num_valid_classes']]]))
    results = dict(
        tool=TOOL, protocol='1x1 conv on standardised patch features, logits upsampled '
        'bilinearly to the label size, full-batch L-BFGS on the L2-regularised cross-entropy; '
        'mmseg IoU semantics', config=args.config, checkpoint=args.checkpoint,
        checkpoint_meta=info['meta'], data_root=args.data_root, train_split=args.train_split,
        split=args.split, num_images=[N, len(val_feats)], num_classes=C, size=args.size,
        feature_dim=C_feat, patch_grid=[h, w], iters=args.iters,
        weight_decay=args.weight_decay, seed=args.seed, **m)
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
