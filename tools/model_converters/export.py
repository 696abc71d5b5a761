"""Export the ViT trunk of a cotap_mm checkpoint for timm (safetensors) or Hugging Face
transformers (a directory).

    python tools/model_converters/export.py SRC DST.safetensors [--which student|teacher]
    python tools/model_converters/export.py SRC DST_DIR --to hf [--which student|teacher]

``--to timm``: DST loads into timm's ``VisionTransformer`` (DINOv3: ``Eva``) with
``strict=True``, its arguments in the file's metadata. ``--to hf``: DST_DIR holds
``config.json`` and ``model.safetensors`` for ``transformers.AutoModel.from_pretrained``. The
object-aware filter is left out. Details: docs/converters.md, "export.py".
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from cotap_mm.converters import (CheckpointConversionError, extract_backbone,  # noqa: E402
                                 timm_model_kwargs, timm_model_name, to_hf, to_timm_state_dict)
from cotap_mm.utils.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402
from tools.model_converters._common import add_converter_args, run_conversion  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a CoTAP ViT trunk for timm or Hugging Face.')
    add_converter_args(p, 'CoTAP pretraining or backbone checkpoint',
                       'output .safetensors (--to timm) or directory (--to hf), written '
                       'atomically')
    p.add_argument('--to', choices=('timm', 'hf'), default='timm', help='target layout')
    p.add_argument('--which', choices=('student', 'teacher'), default='student')
    return p.parse_args(argv)


def _safetensors(state, metadata):
    from safetensors.torch import save
    return save({k: v.clone() for k, v in state.items()}, metadata)


def _left_out(keys, target):
    return f'; left out {len(keys)} object-aware filter tensors (no {target} counterpart)' \
        if keys else ''


def main(argv=None):
    args = parse_args(argv)

    def convert():
        ckpt = extract_backbone(args.src, which=args.which, num_heads=args.num_heads,
                                unsafe_pickle=args.unsafe_pickle)
        if args.to == 'hf':
            return to_hf(ckpt['state_dict'], ckpt['meta'], args.src)
        return (ckpt['meta'], *to_timm_state_dict(ckpt['state_dict'], args.src))

    def save_timm(converted, dst):
        meta, state, left_out = converted
        kwargs, name = timm_model_kwargs(meta), timm_model_name(meta)
        rope = meta['backbone_cfg'].get('rope_base') is not None
        metadata = dict(format='pt', layout='timm ' + ('Eva' if rope else 'VisionTransformer'),
                        timm_kwargs=json.dumps(kwargs), timm_name=name,
                        source=osp.abspath(args.src), which=args.which,
                        left_out=json.dumps(left_out))
        atomic_write_bytes(_safetensors(state, metadata), dst)
        how = (f'timm.create_model({name!r}, **{kwargs})' if rope else
               f'VisionTransformer(**{kwargs})' +
               (f', the architecture of timm\'s {name!r}' if name else ''))
        print(f'{dst}: {len(state)} tensors in the timm layout ({args.which} of {args.src}); '
              f'{how}{_left_out(left_out, "timm")}')

    def save_hf(converted, dst):
        config, state, left_out = converted
        if osp.exists(dst) and not osp.isdir(dst):
            raise CheckpointConversionError(f'{dst}: --to hf writes a directory; this is a file')
        os.makedirs(dst, exist_ok=True)
        atomic_write_bytes(_safetensors(state, dict(format='pt')),
                           osp.join(dst, 'model.safetensors'))
        atomic_write_text(osp.join(dst, 'config.json'), config)
        print(f'{dst}: config.json + model.safetensors ({len(state)} tensors, '
              f'{json.loads(config)["architectures"][0]}; {args.which} of {args.src}) for '
              f'transformers.AutoModel.from_pretrained{_left_out(left_out, "Hugging Face")}')

    return run_conversion(args, convert, save_hf if args.to == 'hf' else save_timm)


if __name__ == '__main__':
    sys.exit(main())
