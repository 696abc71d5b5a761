"""CoTAPVisionTransformer: DINO layout, shapes, frozen stages."""
import pytest
import torch
from mmpretrain.models import VisionTransformer

from cotap_mm.models.backbones import CoTAPVisionTransformer


def test_dino_layout_defaults():
    vit = CoTAPVisionTransformer(arch='tiny')
    assert vit.out_type == 'featmap'
    assert not vit.final_norm and not hasattr(vit, 'ln1')
    assert vit.interpolate_mode == 'bicubic'
    assert vit.layers[0].ln1.eps == 1e-6
    assert vit.layers[0].attn.qkv.bias is not None
    # same state-dict keys as mmpretrain's ViT (minus the final norm), so weights convert 1:1
    ref = VisionTransformer(arch=dict(embed_dims=64, num_layers=2, num_heads=2,
                                      feedforward_channels=256), final_norm=False)
    assert vit.state_dict().keys() == ref.state_dict().keys()


def test_small_is_vit_s_not_mmpretrain_small():
    # mmpretrain's 'small' is 768-d / 8 layers; ours is DINO's ViT-S
    vit = CoTAPVisionTransformer(arch='small')
    assert (vit.embed_dims, vit.num_layers, vit.arch_settings['num_heads']) == (384, 12, 6)
    assert CoTAPVisionTransformer.arch_zoo['base']['embed_dims'] == 768
    assert VisionTransformer.arch_zoo['small']['embed_dims'] == 768  # parent left untouched


@pytest.mark.parametrize('patch_size, hw', [(16, (64, 96)), (8, (40, 24)), (16, (48, 48))])
def test_featmap_shapes_non_square(patch_size, hw):
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=patch_size, out_indices=[0, 1])
    outs = vit(torch.rand(2, 3, *hw))
    assert isinstance(outs, tuple) and len(outs) == 2
    for out in outs:
        assert out.shape == (2, 64, hw[0] // patch_size, hw[1] // patch_size)


def test_raw_output_has_cls_token():
    vit = CoTAPVisionTransformer(arch='tiny', out_type='raw')
    (out, ) = vit(torch.rand(1, 3, 32, 64))
    assert out.shape == (1, 1 + 2 * 4, 64)


def test_train_keeps_frozen_stages_frozen():
    vit = CoTAPVisionTransformer(arch='tiny', frozen_stages=1, drop_path_rate=0.1)
    vit.train()
    assert not vit.layers[0].training and not vit.patch_embed.training
    assert vit.layers[1].training
    assert not any(p.requires_grad for p in vit.layers[0].parameters())
    assert all(p.requires_grad for p in vit.layers[1].parameters())
    assert not vit.pos_embed.requires_grad and not vit.cls_token.requires_grad
    vit.eval()
    assert not vit.layers[1].training
    # frozen layers are deterministic in train mode (no drop-path inside them)
    vit.train()
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(vit.layers[0](vit.patch_embed(x)[0]),
                               vit.layers[0](vit.patch_embed(x)[0]))
