"""Extract the backbone of a cotap_mm CoTAP pretraining checkpoint for mmseg / mmpretrain.

    python tools/model_converters/extract_backbone.py SRC DST [--which student|teacher]

Load DST with ``init_cfg=dict(type='CoTAPPretrained', checkpoint=DST, prefix='backbone.')``.
Details (student by default, what is dropped): docs/converters.md, "extract_backbone.py".
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cotap_mm.converters import extract_backbone  # noqa: E402
from tools.model_converters._common import add_converter_args, run_conversion  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Extract the CoTAPVisionTransformer backbone of a CoTAP pretraining '
        'checkpoint.')
    add_converter_args(parser, 'checkpoint of cotap_mm CoTAP pretraining')
    parser.add_argument('--which', choices=('student', 'teacher'), default='student',
                        help='student (default, what the official evaluation uses) or the EMA '
                        'teacher')
    parser.add_argument('--drop-final-norm', action='store_true',
                        help='drop the final LayerNorm (ln1.*) of a backbone trained with '
                        'final_norm=True, as CoTAP drops DINO\'s (docs/method.md §2.1)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_conversion(args, lambda: extract_backbone(
        args.src, which=args.which, num_heads=args.num_heads, unsafe_pickle=args.unsafe_pickle,
        drop_final_norm=args.drop_final_norm))


if __name__ == '__main__':
    sys.exit(main())
