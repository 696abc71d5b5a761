import io

import pytest
import torch

from cotap_mm.models.utils import FeatureQueue


def test_fifo_order_and_capacity():
    q = FeatureQueue(5, 2)
    assert q.is_empty and q.rows.shape == (0, 2)
    q.push(torch.tensor([[1., 1.], [2., 2.]]))
    q.push(torch.tensor([[3., 3.]]))
    assert torch.equal(q.rows[:, 0], torch.tensor([3., 1., 2.]))  # newest first
    q.push(torch.tensor([[4., 4.], [5., 5.], [6., 6.]]))
    assert len(q) == 5
    assert torch.equal(q.rows[:, 0], torch.tensor([4., 5., 6., 3., 1.]))  # oldest (2) dropped
    q.push(torch.arange(14.).view(7, 2))  # more than capacity: first 5 kept
    assert torch.equal(q.rows[:, 0], torch.tensor([0., 2., 4., 6., 8.]))


def test_max_insert_random_subset():
    q = FeatureQueue(100, 1)
    rows = torch.arange(50.).view(50, 1)
    g = torch.Generator().manual_seed(0)
    q.push(rows, max_insert=10, generator=g)
    assert len(q) == 10
    vals = q.rows[:, 0]
    assert len(set(vals.tolist())) == 10 and set(vals.tolist()) <= set(range(50))
    g2 = torch.Generator().manual_seed(0)
    q2 = FeatureQueue(100, 1)
    q2.push(rows, max_insert=10, generator=g2)
    assert torch.equal(q.rows, q2.rows)  # reproducible
    q.push(rows[:3], max_insert=10)  # fewer rows than max_insert: all, in order
    assert torch.equal(q.rows[:3, 0], torch.tensor([0., 1., 2.]))


def test_state_dict_round_trip():
    q = FeatureQueue(8, 3)
    q.push(torch.randn(5, 3, requires_grad=True).half())
    assert q.queue.dtype == torch.float32 and not q.queue.requires_grad
    sd = q.state_dict()
    assert set(sd) == {'queue', 'num_filled'}
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    q2 = FeatureQueue(8, 3)
    q2.load_state_dict(torch.load(buf))
    assert len(q2) == 5 and torch.equal(q2.rows, q.rows)


def test_errors():
    q = FeatureQueue(4, 2)
    with pytest.raises(ValueError, match='max_insert'):
        q.push(torch.randn(3, 2), max_insert=-1)
    with pytest.raises(ValueError, match='capacity'):
        FeatureQueue(0, 2)


def test_builds_from_config():
    from cotap_mm.registry import MODELS
    q = MODELS.build(dict(type='FeatureQueue', capacity=8, dim=3))
    assert isinstance(q, FeatureQueue) and q.is_empty
