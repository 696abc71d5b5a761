"""Convert COCO-Stuff stuffthingmaps to the 27 coarse classes of COCO-Stuff-27 (IIC/STEGO), or
with ``--classes 15`` to the 15 stuff super-classes of COCO-Stuff-15 (Leopart/NeCo).

    python tools/dataset_converters/coco_stuff27.py data/cocostuff [-o OUT_DIR] [--nproc 8]
    # NeCo's COCO-Stuff-15: every val image, a seeded random 10 % of the train images
    python tools/dataset_converters/coco_stuff27.py data/cocostuff --classes 15 --all-images \
        --sample train2017=0.1

Input: the raw stuffthingmaps (0..181); mmseg's ``*_labelTrainIds.png`` maps are refused.
Details (layout, curated lists, output): docs/data.md, "COCO-Stuff-27".
"""
import argparse
import os
import os.path as osp
import sys
from functools import partial

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # repo root

from cotap_mm.datasets.coco_stuff27 import (DEFAULT_LISTS, TRAIN_IDS_SUFFIX,  # noqa: E402
                                            convert_one, read_ids, refuse_train_ids)
from tools._common.args import positive_int, tool_logger  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert COCO-Stuff stuffthingmaps (0..181) to COCO-Stuff-27 label PNGs')
    parser.add_argument('coco_root', help='folder holding images/, annotations/ and curated/')
    parser.add_argument('--classes', type=int, choices=(27, 15), default=27,
                        help='27: COCO-Stuff-27; 15: the stuff super-classes only, things -> 255 '
                        '(default: 27)')
    parser.add_argument('-o', '--out-dir',
                        help='output folder (default: COCO_ROOT/annotations27 or annotations15)')
    parser.add_argument('--ann-dir', default='annotations',
                        help='raw stuffthingmaps folder, relative to COCO_ROOT '
                        '(default: annotations)')
    parser.add_argument('--splits', nargs='+', default=['train2017', 'val2017'])
    parser.add_argument('--list', action='append', default=[], metavar='SPLIT=FILE',
                        help='image-id list of a split, relative to COCO_ROOT (default: the STEGO '
                        'curated lists); repeat for several splits')
    parser.add_argument('--all-images', action='store_true',
                        help='convert every map of the split, not only the listed ids')
    parser.add_argument('--sample', action='append', default=[], metavar='SPLIT=FRACTION',
                        help='convert a random FRACTION of the split\'s ids only (drawn with '
                        '--seed) and list them in OUT_DIR/SPLIT.txt, the ann_file of the configs')
    parser.add_argument('--seed', type=int, default=0, help='seed of --sample (default: 0)')
    parser.add_argument('--nproc', type=positive_int, default=1, help='worker processes (default: 1)')
    args = parser.parse_args(argv)
    args.samples = {}
    for item in args.sample:
        split, _, fraction = item.partition('=')
        try:
            args.samples[split] = float(fraction)
        except ValueError:
            parser.error(f'--sample {item!r}: expected SPLIT=FRACTION')
        if not 0 < args.samples[split] <= 1:
            parser.error(f'--sample {item!r}: FRACTION must be in (0, 1]')
    lists = dict(DEFAULT_LISTS)
    for item in args.list:
        if '=' not in item:
            parser.error(f'--list {item!r}: expected SPLIT=FILE')
        split, path = item.split('=', 1)
        lists[split] = path
    args.lists = lists
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    from mmengine.utils import track_parallel_progress, track_progress

    import numpy as np

    from cotap_mm.datasets.coco_stuff27 import fine_to_coarse_lut
    from cotap_mm.utils.fileio import atomic_open
    logger = tool_logger('coco_stuff27_converter')
    root = args.coco_root
    out_dir = args.out_dir or osp.join(root, f'annotations{args.classes}')
    lut = fine_to_coarse_lut(args.classes)
    if osp.realpath(out_dir) == osp.realpath(osp.join(root, args.ann_dir)):
        parser.error('--out-dir must differ from the raw annotations folder (same file names)')
    unknown = sorted(set(args.samples) - set(args.splits))
    if unknown:
        parser.error(f'--sample names splits that are not converted: {unknown} (--splits '
                     f'{args.splits})')
    totals = {}
    for split in args.splits:
        src_dir = osp.join(root, args.ann_dir, split)
        if not osp.isdir(src_dir):
            parser.error(f'raw label folder not found: {src_dir}')
        names = sorted(os.listdir(src_dir))
        if args.all_images:
            ids = [n[:-4] for n in names
                   if n.endswith('.png') and not n.endswith(TRAIN_IDS_SUFFIX)]
            if not ids and any(n.endswith(TRAIN_IDS_SUFFIX) for n in names):
                refuse_train_ids(f'{src_dir} (only *{TRAIN_IDS_SUFFIX} files)')
        else:
            if split not in args.lists:
                parser.error(f'no image list for split {split!r}: pass --list {split}=FILE or '
                             '--all-images')
            list_file = osp.join(root, args.lists[split])
            if not osp.isfile(list_file):
                parser.error(f'image list not found: {list_file} (the STEGO curated lists, or '
                             '--all-images)')
            ids = read_ids(list_file)
        if not ids:
            parser.error(f'no image ids for split {split!r}')
        dst_dir = osp.join(out_dir, split)
        os.makedirs(dst_dir, exist_ok=True)
        if split in args.samples:
            rng = np.random.default_rng(args.seed)
            keep = max(1, int(len(ids) * args.samples[split]))
            ids = sorted(ids[i] for i in rng.choice(len(ids), size=keep, replace=False))
            with atomic_open(osp.join(out_dir, f'{split}.txt'), 'w') as f:
                f.write(''.join(f'{image_id}\n' for image_id in ids))
        logger.info(f'{split}: converting {len(ids)} maps {src_dir} -> {dst_dir} '
                    f'(nproc={args.nproc})')
        func = partial(convert_one, src_dir=src_dir, dst_dir=dst_dir, lut=lut)
        if args.nproc > 1:
            counts = track_parallel_progress(func, ids, nproc=args.nproc)
        else:
            counts = track_progress(func, ids)
        totals[split] = len(ids)
        logger.info(f'{split}: {len(ids)} maps written, {sum(counts)} labelled pixels')
    return totals


if __name__ == '__main__':
    main()
