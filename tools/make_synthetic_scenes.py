"""Generate the synthetic "things and stuff" scenes of the CPU demo (docs/synthetic.md).

    python tools/make_synthetic_scenes.py OUT [--seed 0] [--size 96] [--num-coco 1000]
        [--num-imagenet 1000] [--num-seg-train 200] [--num-seg-val 100] [--num-seg-test 0] [--force]
        [--colour-mode per_instance|per_class] [--preview PNG]
    python tools/make_synthetic_scenes.py --preview docs/images/synthetic_scenes.png

Writes OUT/coco/train2017 (pretraining, COCO-style), OUT/imagenet/train/<class> (object-centric,
ImageNet-style), OUT/seg/{img_dir,ann_dir}/{train,val} + OUT/seg/classes.json (mmseg layout;
different random streams from the pretraining images), with --num-depth-train/--num-depth-test
OUT/nyu/{images,annotations}/{train,test} (scenes and uint16 millimetre depth maps, the NYU
Depth v2 layout of mmseg's NYUDataset) and OUT/meta.json. By default
(--colour-mode per_instance) every object and stuff region gets a random colour, so colour does
not give the class; --colour-mode per_class gives each class its own hue range (the scenes of
generator version 1). The output is byte-identical for the same arguments. Everything is
written to OUT.tmp first and renamed to OUT at the end. A non-empty OUT is replaced only with
--force, and only if a previous run of this tool wrote it.

With --preview PNG (and optionally no OUT) it also writes a small picture of a few scenes next
to their coloured label maps.
"""
import argparse
import importlib.util
import os.path as osp
import sys
import time
from typing import List, Optional

from mmengine.utils import ProgressBar

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # the checkout

from tools._common.args import int_at_least, non_negative_int, tool_logger  # noqa: E402


def _load_synthetic():
    """Load the package cotap_mm/datasets/synthetic/ by path: it needs only numpy and cv2, and
    importing ``cotap_mm`` would import torch and every model for nothing."""
    folder = osp.join(ROOT, 'cotap_mm', 'datasets', 'synthetic')
    spec = importlib.util.spec_from_file_location(
        'cotap_mm_synthetic', osp.join(folder, '__init__.py'), submodule_search_locations=[folder])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its submodules import each other relatively
    spec.loader.exec_module(mod)
    return mod


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='Generate synthetic things-and-stuff scenes in the '
                                'COCO / ImageNet / mmseg folder layouts (docs/synthetic.md)')
    p.add_argument('out', nargs='?', help='output folder (must not exist or be empty, '
                   'unless --force)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--size', type=int_at_least(16), default=96, help='image side in pixels')
    p.add_argument('--num-coco', type=non_negative_int, default=1000,
                   help='COCO-style scenes (pretraining)')
    p.add_argument('--num-imagenet', type=non_negative_int, default=1000,
                   help='object-centric scenes in ImageNet class folders (pretraining)')
    p.add_argument('--num-seg-train', type=non_negative_int, default=200,
                   help='labelled scenes, probe train')
    p.add_argument('--num-seg-val', type=non_negative_int, default=100,
                   help='labelled scenes, probe val')
    p.add_argument('--num-seg-test', type=non_negative_int, default=0,
                   help='labelled scenes of the held-out test split (seg/*/test)')
    p.add_argument('--num-depth-train', type=non_negative_int, default=0,
                   help='scenes with depth maps in the NYU Depth v2 layout (nyu/), train split')
    p.add_argument('--num-depth-test', type=non_negative_int, default=0,
                   help='the same, test split')
    p.add_argument('--colour-mode', choices=['per_instance', 'per_class'], default='per_instance',
                   help='per_instance (default): a random colour per object and stuff region, '
                   'the class is carried by shape, texture and context; per_class: each class '
                   'its own hue range (generator version 1)')
    p.add_argument('--force', action='store_true',
                   help='replace a non-empty OUT written earlier by this tool')
    p.add_argument('--preview', metavar='PNG',
                   help='also write a preview picture (scenes | labels) to this .png')
    p.add_argument('--preview-num', type=int, default=3, help='scenes in the preview')
    args = p.parse_args(argv)
    if args.out is None and args.preview is None:
        p.error('give an output folder OUT, or --preview PNG (or both)')
    return args


def main(argv: Optional[List[str]] = None) -> Optional[dict]:
    args = parse_args(argv)
    logger = tool_logger('make_synthetic_scenes')
    syn = _load_synthetic()
    meta = None
    if args.out is not None:
        total = (args.num_coco + args.num_imagenet + args.num_seg_train + args.num_seg_val +
                 args.num_seg_test + args.num_depth_train + args.num_depth_test)
        logger.info(f'Writing {total} synthetic {args.size}px scenes (seed {args.seed}) to '
                    f'{args.out} ({args.colour_mode} colours): coco {args.num_coco}, imagenet '
                    f'{args.num_imagenet}, seg train {args.num_seg_train}, seg val '
                    f'{args.num_seg_val}, seg test {args.num_seg_test}')
        t0 = time.time()
        bar = ProgressBar(total) if total else None
        meta = syn.write_synthetic_dataset(
            args.out, seed=args.seed, size=args.size, num_coco=args.num_coco,
            num_imagenet=args.num_imagenet, num_seg_train=args.num_seg_train,
            num_seg_val=args.num_seg_val, num_seg_test=args.num_seg_test,
            num_depth_train=args.num_depth_train,
            num_depth_test=args.num_depth_test, force=args.force, colour_mode=args.colour_mode,
            progress=bar.update if bar else None)
        if bar:
            sys.stdout.write('\n')
        logger.info(f'Done in {time.time() - t0:.1f} s: {osp.abspath(args.out)} '
                    f'(imagenet folders: {meta["imagenet_per_class"]})')
    if args.preview:
        syn.write_preview(args.preview, args.seed, args.size, args.preview_num, args.colour_mode)
        logger.info(f'Wrote preview {args.preview}')
    return meta


if __name__ == '__main__':
    try:
        main()
    except (FileExistsError, ValueError) as e:  # bad arguments / output folder: no traceback
        sys.exit(f'make_synthetic_scenes: error: {e}')
