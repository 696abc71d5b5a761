"""What the converter command lines of ``tools/model_converters/`` share: the ``SRC DST``,
``--num-heads`` and ``--unsafe-pickle`` arguments and the run that warns, converts, reports a
conversion error as one line and writes the result (docs/converters.md)."""
import sys

from cotap_mm.utils.checkpoint_loading import CheckpointConversionError
from cotap_mm.utils.fileio import atomic_save
from .backbone_meta import format_summary

__all__ = ['add_converter_args', 'run_conversion']


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


def _save_checkpoint(ckpt, dst):
    atomic_save(ckpt, dst)
    print(format_summary(ckpt, dst=dst))


def run_conversion(args, convert, save=_save_checkpoint) -> int:
    """Run ``convert()`` and ``save(result, args.dst)``; returns the exit code.

    A missing or unconvertible SRC is one ``error:`` line on stderr and exit code 1.
    """
    if args.unsafe_pickle:
        print('warning: --unsafe-pickle: the file may be loaded with weights_only=False, which '
              'executes any code pickled in it; use it only for files you trust.',
              file=sys.stderr)
    try:
        result = convert()
        save(result, args.dst)
    except (CheckpointConversionError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0
