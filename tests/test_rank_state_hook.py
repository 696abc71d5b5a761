"""cotap_mm.engine.hooks.rank_state_hook: which buffers a checkpoint keeps per rank."""
import pytest
import torch

from cotap_mm.engine.hooks.rank_state_hook import rank_state


class _Model(torch.nn.Module):

    def __init__(self, with_bank=True):
        super().__init__()
        self.patch_queue = torch.nn.Module()
        self.patch_queue.register_buffer('feats', torch.arange(4.))
        self.bank = torch.nn.Module() if with_bank else None
        if with_bank:
            self.bank.register_buffer('memory', torch.ones(2))


def test_buffers_of_the_named_modules():
    state = rank_state(_Model(), ('bank', 'patch_queue'))
    assert sorted(state['buffers']) == ['bank.memory', 'patch_queue.feats']
    assert torch.equal(state['buffers']['patch_queue.feats'], torch.arange(4.))


def test_a_switched_off_component_is_skipped_a_missing_one_refused():
    state = rank_state(_Model(with_bank=False), ('bank', 'patch_queue'))
    assert sorted(state['buffers']) == ['patch_queue.feats']
    with pytest.raises(KeyError, match="no submodule 'cls_queue'"):
        rank_state(_Model(), ('bank', 'cls_queue'))
