"""PrototypeBank: FIFO filling, checkpointing, one-time k-means broadcast, the prototypes' load
into the filters (teacher kernel sync)."""
import copy
import io
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cotap_mm.models.necks import ObjectAwareFilter
from cotap_mm.models.necks import PrototypeBank

D = 4


def _feats(n, value_offset=0.):
    # each image's map is constant (= its index + offset), so pooled samples identify images
    vals = torch.arange(n, dtype=torch.float32) + value_offset
    return vals.view(n, 1, 1, 1).expand(n, D, 6, 5).clone()


def test_fifo_fill_then_random_subset():
    bank = PrototypeBank(D, capacity=10, num_insert=2, num_prototypes=3)
    assert bank.samples.shape == (0, D, 3, 3)
    bank.update(_feats(4))
    assert int(bank.num_filled) == 4 and not bank.is_full
    bank.update(_feats(4, 100.))
    # newest first: the second batch precedes the first
    assert bank.samples[:, 0, 0, 0].tolist() == [100, 101, 102, 103, 0, 1, 2, 3]
    bank.update(_feats(4, 200.))  # not full yet: all 4 inserted, the 2 oldest dropped
    assert bank.is_full
    assert bank.samples[:, 0, 0, 0].tolist() == [200, 201, 202, 203, 100, 101, 102, 103, 0, 1]
    bank.update(_feats(4, 300.), generator=torch.Generator().manual_seed(0))  # full: 2 random
    first = bank.samples[:, 0, 0, 0].tolist()
    assert all(300 <= v < 304 for v in first[:2]) and first[0] != first[1]
    assert first[2:] == [200, 201, 202, 203, 100, 101, 102, 103]
    assert int(bank.num_filled) == 10


def test_pooling_is_adaptive_3x3_and_detached():
    bank = PrototypeBank(D, capacity=4, num_prototypes=2)
    x = torch.randn(1, D, 14, 14, requires_grad=True)
    bank.update(x)
    torch.testing.assert_close(bank.samples[0, :, 1, 1], x.detach()[0, :, 4:10, 4:10].mean((1, 2)))
    assert not bank.bank.requires_grad


def test_state_dict_and_torch_save_round_trip():
    bank = PrototypeBank(D, capacity=6, num_prototypes=2)
    bank.update(torch.randn(6, D, 4, 4))
    assert bank.maybe_cluster(generator=torch.Generator().manual_seed(0)).shape == (2, D, 3, 3)
    assert set(bank.state_dict()) == {'bank', 'num_filled', 'initialized'}
    new = PrototypeBank(D, capacity=6, num_prototypes=2)
    new.load_state_dict(bank.state_dict())
    torch.testing.assert_close(new.bank, bank.bank)
    assert int(new.num_filled) == 6 and bool(new.initialized)
    assert new.maybe_cluster() is None  # a resumed run does not re-cluster
    buf = io.BytesIO()
    torch.save(bank.state_dict(), buf)
    buf.seek(0)
    new2 = PrototypeBank(D, capacity=6, num_prototypes=2)
    new2.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(new2.bank, bank.bank)
    assert bool(new2.initialized) and int(new2.num_filled) == 6


def test_cluster_only_once_when_full_and_sets_kernel():
    bank = PrototypeBank(D, capacity=8, num_insert=2, num_prototypes=3)
    bank.update(torch.randn(5, D, 4, 4))
    assert bank.maybe_cluster() is None and not bool(bank.initialized)
    bank.update(torch.randn(5, D, 4, 4))
    kernel = bank.maybe_cluster(generator=torch.Generator().manual_seed(0))
    assert kernel.shape == (3, D, 3, 3) and bool(bank.initialized)
    torch.testing.assert_close(kernel.flatten(1).norm(dim=1), torch.ones(3))
    assert bank.maybe_cluster() is None
    oaf = ObjectAwareFilter(embed_dims=D, num_prototypes=3)
    param = oaf.kernel
    oaf.load_prototypes(kernel)
    assert oaf.kernel is param  # same Parameter: optimiser state kept
    torch.testing.assert_close(oaf.kernel.detach(), kernel)


@pytest.mark.parametrize('teacher_sync', [False, True])
def test_prototypes_load_the_kmeans_once_and_sync_the_teacher(teacher_sync):
    bank = PrototypeBank(D, capacity=4, num_prototypes=3, teacher_sync=teacher_sync)
    student = ObjectAwareFilter(embed_dims=D, num_prototypes=3)
    teacher = copy.deepcopy(student)
    initial = student.kernel.detach().clone()
    bank.update(torch.randn(2, D, 4, 4))
    kernel, samples = bank.prototypes(student, teacher)  # not full yet: nothing loaded
    assert kernel is student.kernel and samples.shape == (2, D, 3, 3)
    assert torch.equal(student.kernel, initial) and not bool(bank.initialized)
    bank.update(torch.randn(2, D, 4, 4))
    kernel, samples = bank.prototypes(student, teacher)  # full: the k-means centres
    assert kernel is student.kernel and samples.shape == (4, D, 3, 3) and bool(bank.initialized)
    torch.testing.assert_close(kernel.detach().flatten(1).norm(dim=1), torch.ones(3))
    assert torch.equal(teacher.kernel, student.kernel) == teacher_sync
    assert torch.equal(teacher.kernel, initial) != teacher_sync
    loaded = student.kernel.detach().clone()
    bank.update(torch.randn(2, D, 4, 4))
    bank.prototypes(student, teacher)  # once only
    assert torch.equal(student.kernel, loaded)


def test_bad_args():
    with pytest.raises(ValueError, match='capacity'):
        PrototypeBank(D, capacity=0)
    with pytest.raises(ValueError, match='num_prototypes'):
        PrototypeBank(D, capacity=4, num_prototypes=8)


def _worker(rank, world_size, port, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        torch.manual_seed(rank)  # different banks and RNG states on each rank
        bank = PrototypeBank(D, capacity=8, num_prototypes=3)
        bank.update(torch.randn(8, D, 3, 3) + 10 * rank)
        kernel = bank.maybe_cluster()
        torch.save(dict(kernel=kernel, bank=bank.bank.clone(), init=bool(bank.initialized)),
                   os.path.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_broadcast(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / 'rank0.pth', weights_only=True)
    r1 = torch.load(tmp_path / 'rank1.pth', weights_only=True)
    assert r0['init'] and r1['init']
    assert not torch.allclose(r0['bank'], r1['bank'])  # the banks differ...
    torch.testing.assert_close(r1['kernel'], r0['kernel'], rtol=0, atol=0)  # ...the kernels not
    # and the kernel is rank 0's k-means of rank 0's bank: every centre is close to its samples
    c = r0['kernel'].flatten(1)
    b0 = torch.nn.functional.normalize(r0['bank'].flatten(1), dim=1)
    assert (b0 @ c.T).max(dim=0).values.min() > 0.5


def test_builds_from_config():
    from cotap_mm.registry import MODELS
    bank = MODELS.build(dict(type='PrototypeBank', embed_dims=D, capacity=16, num_insert=4,
                             num_prototypes=4))
    assert isinstance(bank, PrototypeBank) and not bool(bank.initialized)
