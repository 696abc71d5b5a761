"""Export the ViT trunk of a cotap_mm checkpoint for timm, as safetensors.

    python tools/model_converters/export.py SRC DST.safetensors [--to timm]
        [--which student|teacher] [--num-heads N] [--unsafe-pickle]

SRC is a CoTAP pretraining checkpoint or a backbone checkpoint (extract_backbone.py /
convert.py output). DST holds the trunk in timm's ``VisionTransformer`` layout, written
atomically, with the model's arguments in its metadata (``timm_kwargs``, JSON); it loads with
``strict=True`` and gives the backbone's ``out_type='raw'`` tokens:

    import json, timm, safetensors.torch as st
    from safetensors import safe_open
    kwargs = json.loads(safe_open(DST, 'pt').metadata()['timm_kwargs'])
    model = timm.models.vision_transformer.VisionTransformer(**kwargs)
    model.load_state_dict(st.load_file(DST), strict=True)
    tokens = model.forward_features(images)  # (B, 1 + N, D)

The object-aware filter (``oaf.*``) has no timm counterpart and is left out (listed); to keep it,
load the cotap_mm checkpoint into ``CoTAPVisionTransformer`` (docs/converters.md).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cotap_mm.converters import extract_backbone  # noqa: E402
from cotap_mm.converters.cli import add_converter_args, run_conversion  # noqa: E402
from cotap_mm.converters.timm_export import (TIMM_NAMES, timm_model_kwargs,  # noqa: E402
                                             to_timm_state_dict)
from cotap_mm.utils.fileio import atomic_write_bytes  # noqa: E402


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
