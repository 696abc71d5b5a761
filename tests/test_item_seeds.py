"""ItemSeedSampler + seeded items: the data randomness of a run is a function of the seed and the
item's place in the run, not of the loader worker that draws it or of the global generators."""
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler
from mmengine.runner import Runner

from cotap_mm.datasets import ItemSeedSampler, split_item_key
from cotap_mm.registry import DATASETS
from cotap_mm.utils.rng import get_rng_state, seeded_generators
from test_datasets import VIEW, data, subset_cfg  # noqa: F401  (the data fixture)


def test_sampler_keeps_default_order_and_seeds_each_place():
    dataset = list(range(10))
    plain = DefaultSampler(dataset, shuffle=True, seed=3)
    seeded = ItemSeedSampler(dataset, shuffle=True, seed=3)
    keys = list(seeded)
    assert [index for index, _ in keys] == list(plain)
    seeds = [seed for _, seed in keys]
    assert len(set(seeds)) == len(seeds)
    assert keys == list(ItemSeedSampler(dataset, shuffle=True, seed=3))  # a function of the seed
    seeded.set_epoch(1)
    assert not {s for _, s in seeded} & set(seeds)  # another epoch, other seeds
    assert split_item_key(7) == (7, None) and split_item_key((7, 11)) == (7, 11)


def test_ranks_get_disjoint_places(monkeypatch):
    import mmengine.dataset.sampler as sampler_module
    keys = {}
    for rank in (0, 1):
        monkeypatch.setattr(sampler_module, 'get_dist_info', lambda r=rank: (r, 2))
        keys[rank] = list(ItemSeedSampler(list(range(9)), shuffle=True, seed=0))
    one = list(ItemSeedSampler(list(range(9)), shuffle=True, seed=0))
    # rank r's item j is the single-process item j * 2 + r when the order is the same (round_up
    # pads 9 to 10, so compare the seeds of the places, derived from (seed, epoch, place))
    assert not {s for _, s in keys[0]} & {s for _, s in keys[1]}
    assert {s for _, s in keys[0]} | {s for _, s in keys[1]} >= {s for _, s in one[:9]}


def _dual(data):  # noqa: F811
    return DATASETS.build(dict(
        type='CoTAPDualDataset', coco=subset_cfg(data, ('coco', 'train2017'), 'coco.npz'),
        imagenet=subset_cfg(data, ('imagenet', 'train'), 'in.npz', num_neighbors=3),
        view_pipeline=VIEW))


def _same_item(a, b):
    return (all(torch.equal(x, y) for x, y in zip(a['inputs'], b['inputs']))
            and np.array_equal(a['data_samples'].bbox_gc, b['data_samples'].bbox_gc)
            and a['data_samples'].img_path == b['data_samples'].img_path)


def test_seeded_item_depends_on_its_seed_only(data):  # noqa: F811
    ds = _dual(data)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    first = ds[(4, 1234)]
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    before = get_rng_state()
    again = ds[(4, 1234)]
    after = get_rng_state()
    assert _same_item(first, again)
    assert not _same_item(first, ds[(4, 1235)])  # another seed: other crops
    # the global generators are left as they were
    assert torch.equal(before['torch'], after['torch']) and before['python'] == after['python']
    assert torch.equal(before['numpy']['key'], after['numpy']['key'])


def test_seeded_generators_restore_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with seeded_generators(99):
        inside = (torch.rand(2), np.random.rand(), random.random())
    assert torch.equal(torch.rand(3), expected)
    with seeded_generators(99):
        assert torch.equal(torch.rand(2), inside[0]) and np.random.rand() == inside[1]
        assert random.random() == inside[2]


@pytest.mark.parametrize('num_workers', [1, 2])
def test_batches_do_not_depend_on_the_number_of_workers(data, num_workers):  # noqa: F811
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')

    def batches(workers):
        loader = Runner.build_dataloader(dict(
            batch_size=3, num_workers=workers, persistent_workers=False,
            sampler=dict(type='ItemSeedSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            dataset=dict(type='CoTAPDualDataset',
                         coco=subset_cfg(data, ('coco', 'train2017'), 'coco.npz'),
                         imagenet=subset_cfg(data, ('imagenet', 'train'), 'in.npz',
                                             num_neighbors=3),
                         view_pipeline=VIEW)), seed=5)
        return list(loader)

    main, workers = batches(0), batches(num_workers)
    assert len(main) == len(workers) == 4
    for a, b in zip(main, workers):
        assert all(torch.equal(x, y) for x, y in zip(a['inputs'], b['inputs']))
        assert all(np.array_equal(x.bbox_all, y.bbox_all)
                   for x, y in zip(a['data_samples'], b['data_samples']))
