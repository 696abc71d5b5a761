"""Hummingbird in-context dense retrieval: label the val patches by their nearest neighbours
in a memory of labelled, augmented train patches.

    python tools/analysis/hummingbird.py CONFIG CHECKPOINT --data-root data/VOCdevkit/VOC2012
        --num-classes 21 [--memory-size 10240000] [--num-neighbors 30] [--ignore-as 0|none]

Details: docs/probes.md, "Hummingbird in-context dense retrieval".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.datasets.folder_datasets import AugmentedSegFolderDataset  # noqa: E402
from cotap_mm.evaluation.dense_retrieval import build_memory, retrieval_confusion  # noqa
from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import segmentation_metrics  # noqa: E402
from tools._common.args import non_negative_int, positive_float, positive_int  # noqa: E402
from tools._common.probes import (add_common_args, add_segmentation_args,  # noqa: E402
                                  load_model_for_tool, make_loader, segmentation_dataset,
                                  setup_tool, write_results)

TOOL = 'hummingbird'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='Hummingbird dense nearest-neighbour retrieval')
    add_common_args(p, default_batch_size=16)
    add_segmentation_args(p)
    p.set_defaults(size=512)  # the reference's 512 for /16 and /8 ViTs (504 for /14)
    p.add_argument('--train-split', default='train', help='split of the memory')
    p.add_argument('--memory-size', type=non_negative_int, default=10240000,
                   help='patches in the memory (the reference\'s largest, 1024 x 10^4); 0: '
                   'every patch of every augmented image')
    p.add_argument('--num-neighbors', type=positive_int, default=30)
    p.add_argument('--temperature', type=positive_float, default=0.02)
    p.add_argument('--augmentation-epochs', type=positive_int, default=2)
    p.add_argument('--scale', type=float, nargs=2, default=(0.5, 2.0),
                   help='RandomResizedCrop area scale of the memory images')
    p.add_argument('--jitter', type=float, default=0.1, help='photometric jitter strength')
    p.add_argument('--ignore-as', default='0',
                   help="class that ignored pixels count as in the memory's soft labels ('0' "
                   "as the reference; 'none': no class)")
    p.add_argument('--query-chunk', type=positive_int, default=4096, help='val patches per search block')
    args = p.parse_args(argv)
    if args.ignore_as.lower() == 'none':
        args.ignore_as = None
    else:
        try:
            args.ignore_as = int(args.ignore_as)
        except ValueError:
            p.error(f"--ignore-as must be a class id or 'none', got {args.ignore_as!r}")
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    backbone, cfg, info = load_model_for_tool(args, 'featmap', logger)
    backbone = backbone.to(args.device).eval()
    if args.size % backbone.patch_size:
        raise SystemExit(f'--size {args.size} is not a multiple of the patch size '
                         f'{backbone.patch_size}')
    train_set = segmentation_dataset(args, cfg, args.train_split, AugmentedSegFolderDataset,
                                     scale=args.scale, jitter=args.jitter, seed=args.seed)
    val_set = segmentation_dataset(args, cfg, args.split, ann_file=args.ann_file)
    keys, key_labels = build_memory(
        backbone, train_set, make_loader(train_set, args), args.num_classes, args.ignore_index,
        args.ignore_as, args.memory_size, args.augmentation_epochs, args.seed, args.device,
        getattr(torch, args.feature_dtype), logger)
    keys, key_labels = keys.to(args.device), key_labels.to(args.device)  # once, not per batch
    logger.info(f'memory of {len(keys)} patches ({keys.shape[1]}-d); {len(val_set)} '
                f'{args.split} images, k = {args.num_neighbors}, temperature '
                f'{args.temperature}')
    C = args.num_classes
    conf = retrieval_confusion(backbone, make_loader(val_set, args), keys, key_labels,
                               args.num_neighbors, args.temperature, args.ignore_index,
                               args.device, args.query_chunk)
    m = segmentation_metrics(conf)
    m['mIoU_all_classes'] = sum(0. if v != v else v for v in m['IoU']) / C  # NaN -> 0
    logger.info('\n' + format_table('Hummingbird dense retrieval',
                                    ['split', 'mIoU %', 'mIoU % (all classes)', 'aAcc %'],
                                    [[args.split, m['mIoU'], m['mIoU_all_classes'],
                                      m['aAcc']]]))
    results = dict(
        tool=TOOL, protocol='open-hummingbird-eval: augmented memory of normalised patch '
        'features with soft labels, rare-class patch sampling, exact cosine top-k, softmax '
        'label voting, bilinear upsampling of the distributions; mmseg IoU semantics',
        config=args.config, checkpoint=args.checkpoint, checkpoint_meta=info['meta'],
        data_root=args.data_root, train_split=args.train_split, split=args.split,
        num_images=[len(train_set), len(val_set)], num_classes=C, size=args.size,
        memory_patches=len(keys), memory_size=args.memory_size,
        augmentation_epochs=args.augmentation_epochs, num_neighbors=args.num_neighbors,
        temperature=args.temperature, scale=list(args.scale), jitter=args.jitter,
        ignore_as=args.ignore_as, seed=args.seed, **m)
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
