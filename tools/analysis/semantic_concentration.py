"""Semantic concentration of frozen patch features on a labelled segmentation split: the mean
cosine between patches of one class in different images (intra) against patches of two classes
(inter), their gap and the normalised ratio (intra - inter) / (1 - inter).

    python tools/analysis/semantic_concentration.py CONFIG CHECKPOINT --data-root ROOT
        --num-classes C [--split val] [--size 448] [--min-purity 0.75] [--no-center]

Details: docs/probes.md, "Semantic concentration".
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

import torch  # noqa: E402

from cotap_mm.evaluation.features import format_table  # noqa: E402
from cotap_mm.evaluation.functional import (concentration_per_class, patch_labels,  # noqa: E402
                                            semantic_concentration)
from cotap_mm.visualization import save_matrix_heatmap  # noqa: E402
from tools._common.args import float_in  # noqa: E402
from tools._common.probes import (add_common_args, add_segmentation_args,  # noqa: E402
                                  segmentation_features, setup_tool, write_results)

TOOL = 'semantic_concentration'


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description='semantic concentration of patch features: '
                                'intra-class (across images) vs inter-class mean cosine')
    add_common_args(p, default_batch_size=16)
    add_segmentation_args(p)
    p.add_argument('--min-purity', type=float_in(0, 1), default=0.75,
                   help='a patch is labelled with its majority class if that class covers at '
                   'least this fraction of its pixels, else ignored')
    p.add_argument('--no-center', action='store_true',
                   help='do not subtract the mean labelled patch feature before normalising')
    p.add_argument('--no-heatmap', action='store_true',
                   help='do not draw the class-by-class mean-cosine matrix (<out>.png)')
    return p.parse_args(argv)


def _fmt(v) -> str:
    return f'{v:.3f}'


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    work_dir, logger, out = setup_tool(args, TOOL)
    # raw: the measure centres and normalises them itself
    feats, labels, info = segmentation_features(args, logger)  # (N, h, w, C), (N, size, size)
    N, h, w, C_feat = feats.shape
    plabels = patch_labels(labels, (h, w), args.num_classes, args.ignore_index,
                           args.min_purity)  # (N, h, w)
    image_ids = torch.arange(N).repeat_interleave(h * w)  # (N*h*w,)
    m = semantic_concentration(feats.view(-1, C_feat), plabels.view(-1), image_ids,
                               center=not args.no_center, ignore_index=args.ignore_index)
    logger.info(f'{m["num_patches"]} of {N * h * w} patches ({N} images x {h}x{w}, '
                f'{C_feat}-d) labelled at purity >= {args.min_purity}; {m["num_classes"]} '
                f'classes, {m["num_intra_classes"]} of them in several images')
    per_class = concentration_per_class(m)
    logger.info('\n' + format_table(
        'Per class', ['class', 'patches', 'images', 'intra', 'closest class', 'its inter'],
        [[r['cls'], r['num_patches'], r['num_images'], _fmt(r['intra']),
          '-' if r['closest_class'] is None else r['closest_class'],
          '-' if r['closest_inter'] is None else _fmt(r['closest_inter'])]
         for r in per_class]))
    center = 'centred' if m['centered'] else 'not centred'
    logger.info('\n' + format_table(
        f'Semantic concentration (mean cosine, {center})',
        ['intra (across images)', 'inter', 'gap', 'ratio', 'patches', 'classes'],
        [[_fmt(m['intra']), _fmt(m['inter']), _fmt(m['gap']), _fmt(m['ratio']),
          m['num_patches'], m['num_classes']]]))
    heatmap = None
    if not args.no_heatmap:
        heatmap = save_matrix_heatmap(
            osp.splitext(out)[0] + '.png', m['classes'].tolist(), m['cosine_matrix'],
            f'{osp.basename(args.checkpoint)} on {args.split}: intra {m["intra"]:.3f}, '
            f'inter {m["inter"]:.3f}, ratio {m["ratio"]:.3f}')
        logger.info(f'Heat map written to {heatmap}' if heatmap else
                    'matplotlib is not installed: no heat map')
    results = dict(
        tool=TOOL,
        protocol='mean cosine of L2-normalised (centred unless --no-center) patch features: '
        'intra over same-class pairs from different images, inter over class pairs; '
        'ratio = (intra - inter) / (1 - inter); patch labels by majority at --min-purity',
        config=args.config, checkpoint=args.checkpoint, checkpoint_meta=info['meta'],
        data_root=args.data_root, split=args.split, num_images=N, num_classes=args.num_classes,
        size=args.size, feature_dim=C_feat, patch_grid=[h, w], min_purity=args.min_purity,
        center=m['centered'], intra=m['intra'], inter=m['inter'], gap=m['gap'],
        ratio=m['ratio'], num_patches_total=N * h * w, num_patches=m['num_patches'],
        num_classes_present=m['num_classes'], num_intra_classes=m['num_intra_classes'],
        per_class=per_class, classes=m['classes'].tolist(),
        cosine_matrix=m['cosine_matrix'].tolist(), heatmap=heatmap)
    write_results(results, out, logger)
    return results


if __name__ == '__main__':
    main()
