"""Convert a released self-supervised ViT checkpoint into an mmengine checkpoint for
``CoTAPVisionTransformer`` (``{'meta': {...}, 'state_dict': {'backbone.<key>': tensor}}``).

    python tools/model_converters/convert.py --src-format FMT SRC DST [--which teacher|student]
        [--arch small|base|tiny] [--keep-final-norm] [--unsafe-pickle]

``--unsafe-pickle`` (Lightning ``.ckpt`` files) is for trusted files only. Details (formats,
defaults, what is dropped, loading): docs/converters.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cotap_mm.converters import (DEFAULT_WHICH, SRC_FORMATS,  # noqa: E402
                                 convert_checkpoint)
from tools.model_converters._common import add_converter_args, run_conversion  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert DINO / iBOT / Mugs / Leopart / timm / official CoTAP ViT '
        'checkpoints to CoTAPVisionTransformer (mmengine) checkpoints.')
    parser.add_argument('--src-format', required=True, choices=SRC_FORMATS,
                        help='layout of SRC')
    add_converter_args(parser, 'source checkpoint')
    parser.add_argument('--which', choices=('student', 'teacher'), default=None,
                        help='network of a student/teacher checkpoint; default: ' + ', '.join(
                            f'{k}={v or "n/a"}' for k, v in DEFAULT_WHICH.items()))
    parser.add_argument('--arch', default=None,
                        help="target arch name ('tiny', 'small', 'base', ...); default: inferred "
                        'from the shapes')
    parser.add_argument('--keep-final-norm', action='store_true',
                        help='keep the final norm.* as ln1.* (for final_norm=True backbones)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_conversion(args, lambda: convert_checkpoint(
        args.src, args.src_format, which=args.which, arch=args.arch, num_heads=args.num_heads,
        keep_final_norm=args.keep_final_norm, unsafe_pickle=args.unsafe_pickle))


if __name__ == '__main__':
    sys.exit(main())
