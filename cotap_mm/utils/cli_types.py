"""Argument types of the command lines: a bad value stops argparse with a message that names the
option (``argument --size: must be >= 1, got 0``)."""
import argparse
from typing import Callable

__all__ = ['int_at_least', 'positive_int', 'non_negative_int', 'float_in', 'positive_float',
           'non_negative_float']


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
