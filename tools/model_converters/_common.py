"""What the converter command lines share: the ``SRC DST``, ``--num-heads`` and
``--unsafe-pickle`` arguments, the printed summary of a converted checkpoint and the run that
warns, converts, reports a conversion error as one line and writes the result
(docs/converters.md)."""
import sys

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError, first_keys
from cotap_mm.utils.fileio import atomic_save


def add_converter_args(parser, src_help: str, dst_help='output .pth (written atomically)'):
    """``SRC DST [--num-heads N] [--unsafe-pickle]``."""
    parser.add_argument('src', metavar='SRC', help=src_help)
    parser.add_argument('dst', metavar='DST', help=dst_help)
    parser.add_argument('--num-heads', type=int, default=None,
                        help='number of attention heads when it cannot be inferred '
                        '(default: 64-d heads)')
    parser.add_argument('--unsafe-pickle', action='store_true',
                        help='allow torch.load(weights_only=False) for files that pickle Python '
                        'objects (Lightning .ckpt); can run code from the file: trusted files '
                        'only')
    return parser


def format_summary(ckpt, dst=None):
    """Human-readable summary of a converted checkpoint's ``meta``."""
    meta = ckpt['meta']
    src = meta['source']
    arch = meta['arch']
    lines = [
        f'source      : {src["file"]} ({src["format"]}, {src.get("which") or "single network"}'
        + (', default' if src.get('which_default') else '') + f'; prefix {src["prefix"]!r}'
        + (f', loaded with {src["loaded_with"]}' if src.get('loaded_with') else '') + ')',
        f'arch        : embed_dims={arch["embed_dims"]} num_layers={arch["num_layers"]} '
        f'num_heads={arch["num_heads"]} ({meta["num_heads_source"]}) '
        f'ffn={arch["feedforward_channels"]} patch_size={meta["patch_size"]} '
        f'img_size={meta["img_size"]}',
        'OAF         : ' + (f'yes ({meta["num_prototypes"]} prototypes)' if meta['with_oaf']
                             else 'no (oaf.* will be initialised fresh: allow_missing oaf.)'),
        'final norm  : ' + ('kept as ln1.*' if meta['final_norm'] else 'none'),
        f'converted   : {meta["num_converted"]} tensors -> backbone.*',
    ]
    for why, keys in meta['dropped'].items():
        lines.append(f'dropped     : {len(keys)} x {why}: {first_keys(keys, 4)}')
    ign = meta['ignored_outside_prefix']
    if ign['count']:
        lines.append(f'not selected: {ign["count"]} keys outside {src["prefix"]!r} (other '
                     f'network / heads / training state), e.g. {ign["first"][:4]}')
    if dst is not None:
        lines.append(f'written     : {dst}')
        lines.append(f"use with    : init_cfg=dict(type='CoTAPPretrained', checkpoint='{dst}', "
                     "prefix='backbone.')")
    return '\n'.join(lines)


def save_checkpoint(ckpt, dst):
    atomic_save(ckpt, dst)
    print(format_summary(ckpt, dst=dst))


def run_conversion(args, convert, save=save_checkpoint) -> int:
    """Run ``convert()`` and ``save(result, args.dst)``; returns the exit code.

    A missing or unconvertible SRC is one ``error:`` line on stderr and exit code 1.
    """
    if args.unsafe_pickle:
        print('warning: --unsafe-pickle: the file may be loaded with weights_only=False, which '
              'executes any code pickled in it; use it only for files you trust.',
              file=sys.stderr)
    try:
        save(convert(), args.dst)
    except (CheckpointConversionError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0
