"""CoTAPVisionTransformer: DINO layout, OAF outputs, attention, checkpoint keys, freezing."""
import pytest
import torch
from mmpretrain.models import VisionTransformer

from cotap_mm.models.backbones import CoTAPVisionTransformer
from cotap_mm.registry import MODELS

TINY = dict(embed_dims=64, num_layers=2, num_heads=2, feedforward_channels=256)


def test_dino_layout_defaults():
    vit = CoTAPVisionTransformer(arch='tiny', with_oaf=False)
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
    # intermediate outputs are plain (D), the last one goes through the OAF (2D)
    for out, c in zip(outs, (64, 128)):
        assert out.shape == (2, c, hw[0] // patch_size, hw[1] // patch_size)
    plain = CoTAPVisionTransformer(arch='tiny', patch_size=patch_size, with_oaf=False)
    assert plain(torch.rand(1, 3, *hw))[0].shape[1] == 64


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


def test_loads_mmpretrain_vit_checkpoint_only_oaf_missing():
    ref = VisionTransformer(arch=TINY, final_norm=False, qkv_bias=True, patch_size=8,
                            img_size=32)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=8, img_size=32)
    res = vit.load_state_dict(ref.state_dict(), strict=False)
    assert not res.unexpected_keys
    assert sorted(res.missing_keys) == sorted(
        ['oaf.kernel'] + [f'oaf.{n}.{p}' for n in ('norm_in', 'norm_out_patch', 'norm_out_cls')
                          for p in ('weight', 'bias')])
    # nothing but the OAF's own parameters is added (the last layer is not duplicated)
    extra = set(vit.state_dict()) - set(ref.state_dict())
    assert all(k.startswith('oaf.') for k in extra) and len(extra) == 7
    # the plain part matches the mmpretrain ViT exactly
    ref.out_type = 'raw'
    vit.out_type = 'raw'
    x = torch.rand(2, 3, 32, 48)
    torch.testing.assert_close(vit(x)[0], ref(x)[0])


@pytest.mark.parametrize('hw', [(64, 64), (48, 80)])
def test_oaf_output_types(hw):
    torch.manual_seed(0)
    x = torch.rand(2, 3, *hw)
    N = (hw[0] // 16) * (hw[1] // 16)
    outs = {}
    ref = CoTAPVisionTransformer(arch='tiny', out_type='raw').eval()
    for t in ('featmap', 'cls_token', 'raw', 'oaf_raw', 'avg_featmap'):
        vit = CoTAPVisionTransformer(arch='tiny', out_type=t).eval()
        vit.load_state_dict(ref.state_dict(), strict=False)  # ln2 of avg_featmap is extra
        (outs[t], ) = vit(x)
    assert outs['raw'].shape == (2, 1 + N, 64)
    assert outs['oaf_raw'].shape == (2, 1 + N, 128)
    assert outs['featmap'].shape == (2, 128, hw[0] // 16, hw[1] // 16)
    assert outs['cls_token'].shape == (2, 128)
    assert outs['avg_featmap'].shape == (2, 128)
    torch.testing.assert_close(outs['cls_token'], outs['oaf_raw'][:, 0])
    torch.testing.assert_close(outs['featmap'].flatten(2).transpose(1, 2), outs['oaf_raw'][:, 1:])
    # the OAF runs with the last layer's weights on the last layer's output
    torch.testing.assert_close(outs['oaf_raw'],
                               ref.oaf(outs['raw'], (hw[0] // 16, hw[1] // 16), ref.layers[-1]))


def test_vit_b8_and_build():
    vit = MODELS.build(dict(type='CoTAPVisionTransformer', arch='base', patch_size=8))
    assert vit.oaf.kernel.shape == (64, 768, 3, 3)
    assert vit.patch_embed.projection.kernel_size == (8, 8)


def test_attention_and_block_input():
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', out_type='raw').eval()
    x = torch.rand(2, 3, 48, 80)
    (raw, ), extras = vit(x, return_attn=True, return_block_input=True)
    attn, blk = extras['attn'], extras['block_input']
    assert attn.shape == (2, 2, 15) and blk.shape == (2, 64, 3, 5)
    assert (attn > 0).all() and (attn.sum(-1) < 1).all()
    # recompute the last layer on its input: the CLS row of the SDPA attention (the CLS key gets
    # the remaining 1 - sum) reproduces the layer's attention output for the CLS token
    last = vit.layers[-1]
    layer_in = _layer_input(vit, x)
    torch.testing.assert_close(layer_in[:, 1:].reshape(2, 3, 5, 64).permute(0, 3, 1, 2), blk)
    B, T, D = layer_in.shape
    qkv = last.attn.qkv(last.ln1(layer_in)).view(B, T, 3, 2, 32)
    v = qkv[:, :, 2].transpose(1, 2)  # (B, heads, T, d_h)
    w = torch.cat([1 - attn.sum(-1, keepdim=True), attn], -1)  # (B, heads, T)
    out = torch.einsum('bht,bhtd->bhd', w, v).reshape(B, D)
    torch.testing.assert_close(last.attn.proj(out), last.attn(last.ln1(layer_in))[:, 0],
                               atol=1e-5, rtol=1e-4)
    # only one flag -> only that entry
    _, only = vit(x, return_attn=True)
    assert set(only) == {'attn'}


def _layer_input(vit, x):
    """Tokens entering the last layer, via a forward pre-hook."""
    store = {}
    h = vit.layers[-1].register_forward_pre_hook(lambda m, a: store.setdefault('x', a[0]))
    vit(x)
    h.remove()
    return store['x']


def test_full_freeze_includes_oaf():
    vit = CoTAPVisionTransformer(arch='tiny', frozen_stages=2)
    assert not any(p.requires_grad for p in vit.parameters())
    vit.train()
    assert not vit.oaf.training and not vit.layers[1].training
    partial = CoTAPVisionTransformer(arch='tiny', frozen_stages=1)
    assert all(p.requires_grad for p in partial.oaf.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match='oaf_raw'):
        CoTAPVisionTransformer(arch='tiny', out_type='oaf_raw', with_oaf=False)
    with pytest.raises(ValueError, match='with_cls_token'):
        CoTAPVisionTransformer(arch='tiny', with_cls_token=False)


def test_frozen_stages_beyond_num_layers_freezes_everything():
    """The linear-probe idiom frozen_stages=12 also works on a smaller model (clamped)."""
    vit = CoTAPVisionTransformer(arch='tiny', frozen_stages=12)
    assert vit.frozen_stages == 2
    assert not any(p.requires_grad for p in vit.parameters())
