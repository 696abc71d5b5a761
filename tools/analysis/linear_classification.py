"""Linear classification probe on frozen CLS features (docs/method.md §6.2).

    python tools/analysis/linear_classification.py CONFIG CHECKPOINT --data-root data/imagenet
        [--feature-cache feats.pth] [--seed 0]

Details: docs/probes.md, "Linear classification".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import (evaluate_linear_probe,  # noqa: E402
                                            train_linear_probe)
from tools._common.args import positive_float, positive_int  # noqa: E402
from tools._common.probes import (add_classification_args, add_common_args,  # noqa: E402
                                  classification_features, setup_tool, write_results)

TOOL = 'linear_classification'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='Single-pass linear classification probe (CLS)')
    add_common_args(p)
    add_classification_args(p)
    p.add_argument('--lr', type=positive_float, default=1e-3, help='Adam learning rate (constant)')
    p.add_argument('--probe-batch-size', type=positive_int, default=256, help='probe training batch')
    p.add_argument('--epochs', type=positive_int, default=1, help='passes over the train features')
    p.add_argument('--save-head', help='save the trained nn.Linear state dict here (.pth)')
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> dict:
    from mmengine.utils import ProgressBar
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    train_f, train_y, val_f, val_y, classes, info = classification_features(args, logger)
    device = torch.device(args.device)
    train_f, train_y = train_f.to(device), train_y.to(device)
    steps = args.epochs * -(-len(train_f) // args.probe_batch_size)
    logger.info(f'Training nn.Linear({train_f.shape[1]}, {len(classes)}): Adam lr {args.lr}, '
                f'batch {args.probe_batch_size}, {args.epochs} pass(es) = {steps} steps, '
                f'seed {args.seed}')
    bar = ProgressBar(steps)
    head = train_linear_probe(train_f, train_y, len(classes), lr=args.lr,
                              batch_size=args.probe_batch_size, epochs=args.epochs,
                              seed=args.seed, progress=bar.update)
    print(flush=True)
    val_acc = evaluate_linear_probe(head, val_f.to(device), val_y.to(device))
    train_acc = evaluate_linear_probe(head, train_f, train_y)
    results = dict(
        tool=TOOL,
        protocol='nn.Linear on raw CLS features, Adam constant lr, single pass, no BN',
        config=args.config, checkpoint=args.checkpoint, checkpoint_meta=info['meta'],
        data_root=args.data_root, num_classes=len(classes), num_train=len(train_f),
        num_val=len(val_f), feature_dim=int(train_f.shape[1]), resize=args.resize,
        crop=args.crop, lr=args.lr, batch_size=args.probe_batch_size, epochs=args.epochs,
        steps=steps, seed=args.seed, top1=val_acc[1], top5=val_acc[5],
        train_top1=train_acc[1])
    logger.info('\n' + format_table('Linear classification', ['split', 'top-1 %', 'top-5 %'],
                                    [['val', val_acc[1], val_acc[5]],
                                     ['train (fit check)', train_acc[1], train_acc[5]]]))
    if args.save_head:
        import os

        from cotap_mm.utils.fileio import atomic_save
        os.makedirs(osp.dirname(osp.abspath(args.save_head)), exist_ok=True)
        atomic_save(head.state_dict(), args.save_head)
        results['head'] = args.save_head
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
