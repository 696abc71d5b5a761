"""Weighted kNN classification on frozen CLS features (docs/method.md §6.2).

    python tools/analysis/knn_classification.py CONFIG CHECKPOINT --data-root data/imagenet
        [--k 20] [--temperature 0.07] [--no-grid] [--feature-cache feats.pth]

Details: docs/probes.md, "kNN classification".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import knn_grid_evaluate, l2_normalize_  # noqa: E402
from tools._common.args import positive_float, positive_int  # noqa: E402
from tools._common.probes import (add_classification_args, add_common_args,  # noqa: E402
                                  classification_features, setup_tool, write_results)

TOOL = 'knn_classification'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='Weighted kNN classification probe (CLS token)')
    add_common_args(p)
    add_classification_args(p)
    p.add_argument('--k', type=positive_int, default=20, help='headline number of neighbours')
    p.add_argument('--temperature', type=positive_float, default=0.07, help='headline temperature T')
    p.add_argument('--grid-k', type=positive_int, nargs='+', default=[5, 10, 20, 50, 100])
    p.add_argument('--grid-t', type=positive_float, nargs='+', default=[0.05, 0.07, 0.1, 0.15, 0.2])
    p.add_argument('--no-grid', action='store_true', help='evaluate the headline (k, T) only')
    p.add_argument('--test-chunk', type=positive_int, default=1024, help='val queries per block')
    p.add_argument('--train-chunk', type=positive_int, default=65536, help='train rows per block')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    train_f, train_y, val_f, val_y, classes, info = classification_features(args, logger)
    device = torch.device(args.device)
    # normalise once, in place, in the storage dtype (the bank may be 1.28M x 768)
    train_f, train_y = l2_normalize_(train_f.to(device)), train_y.to(device)
    val_f, val_y = l2_normalize_(val_f.to(device)), val_y.to(device)
    head = (args.k, args.temperature)
    grid_keys = [] if args.no_grid else [(k, t) for k in args.grid_k for t in args.grid_t]
    ks = sorted({args.k, *(k for k, _ in grid_keys)})
    ts = sorted({args.temperature, *(t for _, t in grid_keys)})
    logger.info(f'kNN over {len(train_f)} train features ({train_f.shape[1]}-d), '
                f'{len(val_f)} queries; k in {ks}, T in {ts}')
    acc = knn_grid_evaluate(train_f, train_y, val_f, val_y, len(classes), ks, ts,
                            normalize=False, test_chunk=args.test_chunk,
                            train_chunk=args.train_chunk)
    n_train = len(train_f)
    results = dict(
        tool=TOOL,
        protocol='weighted kNN, cosine on L2-normalised CLS features, vote sum exp(sim/T)',
        config=args.config, checkpoint=args.checkpoint, checkpoint_meta=info['meta'],
        data_root=args.data_root, num_classes=len(classes), num_train=n_train,
        num_val=len(val_f), feature_dim=int(train_f.shape[1]),
        resize=args.resize, crop=args.crop,
        headline=dict(k=args.k, temperature=args.temperature, effective_k=min(args.k, n_train),
                      top1=acc[head][1], top5=acc[head][5]))
    # str(T): the table formats floats to two decimals, T = 0.075 must not read 0.07
    rows = [['fixed (headline)', args.k, str(args.temperature), acc[head][1], acc[head][5]]]
    if grid_keys:
        grid = [dict(k=k, temperature=t, top1=acc[(k, t)][1], top5=acc[(k, t)][5])
                for k, t in grid_keys]
        best = max(grid, key=lambda g: (g['top1'], g['top5']))
        results['grid'] = grid
        results['grid_best_selected_on_val'] = dict(
            best, note='best top-1 over the grid, selected on the val set itself (the official '
            'CoTAP reporting); optimistic, not a held-out number')
        rows.append(['grid best (selected on val)', best['k'], str(best['temperature']),
                     best['top1'], best['top5']])
        logger.info('\n' + format_table(
            'kNN grid (top-1 %, rows k, columns T)', ['k \\ T'] + [str(t) for t in args.grid_t],
            [[k] + [acc[(k, t)][1] for t in args.grid_t] for k in args.grid_k]))
    logger.info('\n' + format_table('kNN classification', ['setting', 'k', 'T', 'top-1 %',
                                                            'top-5 %'], rows))
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
