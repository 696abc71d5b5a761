"""Constructor-argument checks with one message form: ``Owner: `name` must be ..., got value``."""
from typing import Any, Iterable

__all__ = ['check_choice', 'check_positive', 'check_positive_int']


def check_choice(owner: str, name: str, value: Any, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f'{owner}: `{name}` must be one of {choices}, got {value!r}')


def check_positive(owner: str, name: str, value: Any) -> None:
    if not value > 0:
        raise ValueError(f'{owner}: `{name}` must be > 0, got {value!r}')


def check_positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{owner}: `{name}` must be a positive int, got {value!r}')
