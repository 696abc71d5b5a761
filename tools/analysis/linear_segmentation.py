"""Converged dense linear probe: a 1x1-conv classifier of frozen patch features fitted to
convergence with full-batch L-BFGS on a labelled split, scored on another.

    python tools/analysis/linear_segmentation.py CONFIG CHECKPOINT --data-root ROOT
        --num-classes C [--train-split train] [--splits val test] [--size 448]
        [--weight-decay 1e-5 1e-4 1e-3 1e-2]

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
    p.add_argument('--train-split', default='train', help='split the probe is fitted on')
    p.add_argument('--splits', nargs='+', default=None,
                   help='splits the one fitted probe is scored on (default: --split)')
    p.add_argument('--iters', type=positive_int, default=200, help='L-BFGS iterations at most')
    p.add_argument('--weight-decay', type=non_negative_float, nargs='+', default=[1e-4],
                   help='L2 penalty on the weights; several values: the one with the best '
                   'mIoU on a held-out part of the training split (--select-fraction) is used')
    p.add_argument('--select-fraction', type=float, default=0.2,
                   help='part of the training split held out to choose the weight decay')
    p.add_argument('--chunk', type=positive_int, default=32, help='images per loss/score block')
    args = p.parse_args(argv)
    if not 0 < args.select_fraction < 1:
        p.error(f'--select-fraction must be in (0, 1), got {args.select_fraction}')
    args.splits = args.splits or [args.split]
    return args


def score(predict, feats, labels, args, device):
    """mmseg metrics of ``predict`` on (N, h, w, C) features and (N, H, W) labels."""
    C = args.num_classes
    conf = torch.zeros((C + 1, C), dtype=torch.long)
    for s in range(0, len(feats), args.chunk):
        x = feats[s:s + args.chunk].permute(0, 3, 1, 2).float().to(device)
        pred = predict(x).argmax(1).cpu()
        conf += confusion_matrix(pred, labels[s:s + args.chunk].long(), C, C, args.ignore_index)
    return segmentation_metrics(conf)


def fit(feats, labels, weight_decay, args, device):
    return fit_dense_linear_probe(
        feats.permute(0, 3, 1, 2).float().to(device), labels.long().to(device),
        args.num_classes, iters=args.iters, ignore_index=args.ignore_index, normalize=True,
        seed=args.seed, optimizer='lbfgs', weight_decay=weight_decay, chunk=args.chunk)


def select_weight_decay(feats, labels, args, device, logger):
    """The weight decay with the best mIoU on a seeded ``--select-fraction`` of the training
    images, the probe fitted on the rest; neither val nor test takes part."""
    n = len(feats)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed))
    held = order[:max(1, round(args.select_fraction * n))]
    rest = order[len(held):]
    table = []
    for wd in args.weight_decay:
        predict = fit(feats[rest], labels[rest], wd, args, device)
        m = score(predict, feats[held], labels[held], args, device)
        table.append(dict(weight_decay=wd, mIoU=m['mIoU'], fit=predict.fit_log))
        logger.info(f'weight decay {wd:g}: mIoU {m["mIoU"]:.2f} on {len(held)} held-out '
                    f'{args.train_split} images')
    best = max(table, key=lambda r: r['mIoU'])['weight_decay']
    return best, dict(held_out_images=len(held), candidates=table)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    model = load_model_for_tool(args, 'featmap', logger)  # one backbone for every split
    fit_args = copy.copy(args)
    fit_args.split = args.train_split
    fit_feats, fit_labels, info = segmentation_features(fit_args, logger, model=model)
    N, h, w, C_feat = fit_feats.shape
    device = torch.device(args.device)
    selection = None
    weight_decay = args.weight_decay[0]
    if len(args.weight_decay) > 1:
        weight_decay, selection = select_weight_decay(fit_feats, fit_labels, args, device, logger)
    logger.info(f'L-BFGS linear probe: {N} {args.train_split} images ({h}x{w} patches, '
                f'{C_feat}-d), at most {args.iters} iterations, weight decay {weight_decay:g}')
    predict = fit(fit_feats, fit_labels, weight_decay, args, device)
    logger.info(f'fit: {predict.fit_log}')
    splits = {}
    for split in args.splits:
        split_args = copy.copy(args)
        split_args.split = split
        feats, labels, _ = segmentation_features(split_args, logger, model=model)
        splits[split] = dict(num_images=len(feats), **score(predict, feats, labels, args, device))
    logger.info('\n' + format_table('Linear segmentation (L-BFGS, converged)',
                                    ['split', 'mIoU %', 'aAcc %', 'classes scored'],
                                    [[k, m['mIoU'], m['aAcc'], m['num_valid_classes']]
                                     for k, m in splits.items()]))
    results = dict(
        tool=TOOL, protocol='1x1 conv on standardised patch features, logits upsampled '
        'bilinearly to the label size, full-batch L-BFGS on the L2-regularised cross-entropy; '
        'mmseg IoU semantics', config=args.config, checkpoint=args.checkpoint,
        checkpoint_meta=info['meta'], data_root=args.data_root, train_split=args.train_split,
        split=args.splits[0], num_images=[N, splits[args.splits[0]]['num_images']],
        num_classes=args.num_classes, size=args.size, feature_dim=C_feat, patch_grid=[h, w],
        iters=args.iters, weight_decay=weight_decay, weight_decay_selection=selection,
        fit=predict.fit_log, seed=args.seed, splits=splits,
        **{k: v for k, v in splits[args.splits[0]].items() if k != 'num_images'})
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
