"""Chance-level mIoU of a segmentation dataset: the mIoU of a predictor that ignores the image
and labels every pixel at random with the class frequencies of the training labels.

    python tools/analysis/chance_miou.py DATA_ROOT --num-classes 12 [--out F]

Details: docs/synthetic.md, "How much do raw pixels tell?".
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import cv2  # noqa: E402

from cotap_mm.evaluation.functional import (chance_segmentation_metrics,  # noqa: E402
                                            class_pixel_counts)
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402
from tools._common.args import positive_int  # noqa: E402


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='mIoU of the train-frequency random predictor')
    p.add_argument('data_root', help='mmseg-layout dataset root')
    p.add_argument('--num-classes', type=positive_int, required=True)
    p.add_argument('--train-ann', default='ann_dir/train', help='training labels, under ROOT')
    p.add_argument('--val-ann', default='ann_dir/val', help='evaluated labels, under ROOT')
    p.add_argument('--seg-suffix', default='.png')
    p.add_argument('--ignore-index', type=int, default=255)
    p.add_argument('--out', help='also write the metrics and counts to this JSON file')
    return p.parse_args(argv)


def read_labels(folder: str, suffix: str):
    """The label maps (H, W) uint8 of ``folder/*suffix``, in sorted order."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f'chance_miou: label folder {folder!r} does not exist')
    names = sorted(f for f in os.listdir(folder) if f.endswith(suffix))
    if not names:
        raise FileNotFoundError(f'chance_miou: no *{suffix} label map in {folder!r}')
    for name in names:
        label = cv2.imread(osp.join(folder, name), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise ValueError(f'chance_miou: {name!r} in {folder!r} is not a single-channel image')
        yield label


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    counts = {split: class_pixel_counts(
        read_labels(osp.join(args.data_root, folder), args.seg_suffix), args.num_classes,
        args.ignore_index) for split, folder in (('train', args.train_ann), ('val', args.val_ann))}
    metrics = chance_segmentation_metrics(counts['train'], counts['val'])
    result = dict(mIoU=metrics['mIoU'], aAcc=metrics['aAcc'], IoU=metrics['IoU'],
                  train_counts=counts['train'].tolist(), val_counts=counts['val'].tolist())
    print(f'chance level: mIoU {metrics["mIoU"]:.2f}, aAcc {metrics["aAcc"]:.2f} '
          f'({metrics["num_valid_classes"]} classes, {metrics["num_pixels"]:.0f} val pixels)')
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=2))
    return result


if __name__ == '__main__':
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'chance_miou: error: {e}')
