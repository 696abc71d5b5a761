"""Are the CoTAP code targets informative? The spread of the patch head's cosine scores over
its prototypes and the entropy of the Sinkhorn codes made from them, student and teacher.

    python tools/analysis/code_entropy.py CONFIG [CHECKPOINT | --fresh-heads] --images DIR

Details: docs/training.md, "What the log shows besides the losses".
"""
import argparse
import json
import math
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.datasets.data_check import global_crop_side  # noqa: E402
from cotap_mm.evaluation.code_entropy import head_patch_scores, score_code_stats  # noqa: E402
from cotap_mm.models.utils.loading import get_normalization, load_config, read_checkpoint  # noqa
from cotap_mm.utils.fileio import atomic_write_text  # noqa: E402
from cotap_mm.utils.images import collect_images, load_squashed  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='a CoTAP training config')
    p.add_argument('checkpoint', nargs='?', help='a CoTAP training checkpoint (tools/train.py)')
    p.add_argument('--fresh-heads', action='store_true',
                   help="no checkpoint: the config's init backbone with new heads (seeded)")
    p.add_argument('--images', nargs='+', required=True, help='image folders or files')
    p.add_argument('--num-images', type=int, default=32)
    p.add_argument('--size', type=int, default=None)
    p.add_argument('--temperatures', type=float, nargs='+', default=[0.05, 0.02, 0.01])
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='also write the numbers to this JSON file')
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='the overrides the checkpoint was trained with, e.g. '
                   'model.patch_head.num_prototypes=32')
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (not args.fresh_heads):
        p.error('give a CHECKPOINT or --fresh-heads (not both)')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from mmengine.registry import init_default_scope

    from cotap_mm.registry import MODELS
    cfg = load_config(args.config, args.cfg_options)
    if cfg.get('model', {}).get('type') != 'CoTAP':
        raise SystemExit(f'CONFIG {args.config}: model.type must be CoTAP')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    torch.manual_seed(args.seed)
    if args.checkpoint:
        cfg.model.backbone.init_cfg = None  # every weight comes from the checkpoint
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        state = read_checkpoint(args.checkpoint)
        model.load_state_dict(state.get('state_dict', state), strict=True)
    else:
        model.init_weights()  # the init backbone of init_cfg, new heads
        model.update_teacher()  # the teacher starts as a copy, as TeacherEMAHook does
    model.eval()
    size = args.size or global_crop_side(cfg) or 224
    mean, std = get_normalization(cfg)
    paths = collect_images(args.images, arg='--images')[:args.num_images]
    x = torch.stack([load_squashed(p, size, mean, std)[1] for p in paths])
    teacher = model.teacher.module
    out = dict(config=args.config, checkpoint=args.checkpoint or 'init + fresh heads',
               images=len(paths), size=size)
    for name, backbone, head in (('student', model.backbone, model.patch_head),
                                 ('teacher', teacher.backbone, teacher.patch_head)):
        stats = score_code_stats(head_patch_scores(backbone, head, x), args.temperatures)
        out[name] = stats
        codes = ', '.join(f"T={t:g}: entropy {stats[f'entropy@{t:g}']:.3f}, max "
                          f"{stats[f'max_prob@{t:g}']:.3f}" for t in args.temperatures)
        print(f"{name}: score std over prototypes {stats['std_over_prototypes']:.4f}, over "
              f"patches {stats['std_over_patches']:.4f}; codes {codes} (uniform: log K = "
              f"{math.log(stats['num_prototypes']):.3f}, 1/K = {1 / stats['num_prototypes']:.4f})")
    if args.out:
        atomic_write_text(args.out, json.dumps(out, indent=1))
    return out


if __name__ == '__main__':
    main()
