"""What every command line shares: argument types (a bad value stops argparse with a message
that names the option: ``argument --size: must be >= 1, got 0``), the launcher arguments of
tools/train.py and tools/test.py, and the tool logger."""
import argparse
import os
from typing import Callable

from mmengine.logging import MMLogger

__all__ = ['int_at_least', 'positive_int', 'non_negative_int', 'float_in', 'positive_float',
           'non_negative_float', 'add_launcher_args', 'parse_launcher_args', 'tool_logger']


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f'must be >= {low}, got {value}')
        return value
    parse.__name__ = 'int'  # argparse names the type in its "invalid int value" message
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """A float in [low, high], or in (low, high] with ``low_open``."""
    def parse(text: str) -> float:
        value = float(text)
        if not (low < value if low_open else low <= value) or value > high:
            bound = (f'{">" if low_open else ">="} {low}' if high == float('inf') else
                     f'in {"(" if low_open else "["}{low}, {high}]')
            raise argparse.ArgumentTypeError(f'must be {bound}, got {value}')
        return value
    parse.__name__ = 'float'
    return parse


positive_float = float_in(0, float('inf'), low_open=True)
non_negative_float = float_in(0, float('inf'))


def add_launcher_args(parser):
    """``--launcher`` and the ``--local-rank`` that ``torch.distributed.launch`` passes."""
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank (older)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launcher_args(parser, argv=None):
    """Parse ``argv`` and export ``LOCAL_RANK`` for mmengine when the launcher did not."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return parser, args


def tool_logger(name: str) -> MMLogger:
    """The INFO-level MMLogger ``name``, created on the first call: a second ``main()`` in one
    process (tests) must not pass arguments to ``get_instance`` again."""
    if MMLogger.check_instance_created(name):
        return MMLogger.get_instance(name)
    return MMLogger.get_instance(name, logger_name=name, log_level='INFO')
