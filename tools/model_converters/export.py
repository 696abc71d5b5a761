"""Export the ViT trunk of a cotap_mm checkpoint for timm, as safetensors.

    python tools/model_converters/export.py SRC DST.safetensors [--which student|teacher]

DST loads into timm's ``VisionTransformer`` with ``strict=True`` (its arguments are in the
file's metadata); the object-aware filter is left out. Details: docs/converters.md, "export.py".
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cotap_mm.converters import (TIMM_NAMES, extract_backbone, timm_model_kwargs,  # noqa: E402
                                 to_timm_state_dict)
from cotap_mm.utils.fileio import atomic_write_bytes  # noqa: E402
from tools.model_converters._common import add_converter_args, run_conversion  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a CoTAP ViT trunk as timm safetensors.')
    add_converter_args(p, 'CoTAP pretraining or backbone checkpoint',
                       'output .safetensors (written atomically)')
    p.add_argument('--to', choices=('timm', ), default='timm', help='target layout')
    p.add_argument('--which', choices=('student', 'teacher'), default='student')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)

    def convert():
        ckpt = extract_backbone(args.src, which=args.which, num_heads=args.num_heads,
                                unsafe_pickle=args.unsafe_pickle)
        return (ckpt['meta'], *to_timm_state_dict(ckpt['state_dict'], args.src))

    def save(converted, dst):
        from safetensors.torch import save as safetensors_bytes
        meta, state, left_out = converted
        kwargs = timm_model_kwargs(meta)
        name = TIMM_NAMES.get((kwargs['embed_dim'], kwargs['depth'], kwargs['num_heads'],
                               kwargs['patch_size']), '')
        metadata = dict(format='pt', layout='timm VisionTransformer',
                        timm_kwargs=json.dumps(kwargs), timm_name=name,
                        source=osp.abspath(args.src), which=args.which,
                        left_out=json.dumps(left_out))
        atomic_write_bytes(safetensors_bytes({k: v.clone() for k, v in state.items()}, metadata),
                           dst)
        print(f'{dst}: {len(state)} tensors in the timm layout ({args.which} of {args.src}); '
              f'VisionTransformer(**{kwargs})' + (f', the architecture of timm\'s {name!r}'
                                                  if name else '') +
              (f'; left out {len(left_out)} object-aware filter tensors (no timm counterpart)'
               if left_out else ''))

    return run_conversion(args, convert, save)


if __name__ == '__main__':
    sys.exit(main())
