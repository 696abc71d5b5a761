"""Suite-wide isolation: a test that makes a DefaultScope current (e.g. 'mmseg') must not leak it
into later tests, whose plain-name builds resolve in the current scope."""
import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def _restore_default_scope():
    before = list(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            del DefaultScope._instance_dict[name]
