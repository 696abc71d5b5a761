"""DINOv2 inits: CoTAPVisionTransformer with LayerScale and register tokens, `convert.py
--src-format dinov2` from the torch.hub and the timm layouts (tokens equal to timm's DINOv2
forward), the layout detection, and the export back to timm."""
import json

import pytest
import torch

from conftest import load_tool
from cotap_mm.converters import convert_state_dict, detect_layout
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer

timm = pytest.importorskip('timm')
VisionTransformer = timm.models.vision_transformer.VisionTransformer


def _timm_dinov2(registers, final_norm=True, seed=0):
    """A small DINOv2-style timm model (patch 14, LayerScale, [4 registers]), random weights
    with non-trivial LayerScale, norms and tokens."""
    torch.manual_seed(seed)
    kw = dict(reg_tokens=registers, no_embed_class=True) if registers else {}
    model = VisionTransformer(img_size=56, patch_size=14, embed_dim=128, depth=2, num_heads=2,
                              init_values=1e-5, num_classes=0, final_norm=final_norm,
                              dynamic_img_size=True, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _hub_layout(timm_sd):
    """The torch.hub layout of a timm DINOv2 state dict: `register_tokens`, a CLS position in
    `pos_embed` (timm folds it into `cls_token`), a `mask_token`."""
    sd = dict(timm_sd)
    if 'reg_token' in sd:
        sd['register_tokens'] = sd.pop('reg_token')
        cls_pos = torch.randn(1, 1, sd['cls_token'].shape[-1])
        sd['cls_token'] = sd['cls_token'] - cls_pos
        sd['pos_embed'] = torch.cat([cls_pos, sd['pos_embed']], dim=1)
    sd['mask_token'] = torch.zeros(1, sd['cls_token'].shape[-1])
    return sd


def _ours(ckpt):
    cfg = dict(ckpt['meta']['backbone_cfg'])
    cfg.pop('type')
    vit = CoTAPVisionTransformer(**dict(cfg, out_type='raw'))
    state = {k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()}
    vit.load_state_dict(state, strict=True)
    return vit.eval()


def _timm_tokens(model, x, registers):
    tokens = model.forward_features(x)  # (B, 1 + R + N, D)
    return torch.cat([tokens[:, :1], tokens[:, 1 + registers:]], dim=1)


@pytest.mark.parametrize('registers', [0, 4])
@pytest.mark.parametrize('layout', ['timm', 'hub'])
def test_converted_dinov2_gives_timm_tokens(registers, layout):
    model = _timm_dinov2(registers)
    sd = model.state_dict()
    sd = _hub_layout(sd) if layout == 'hub' else sd
    assert detect_layout(sd)['format'] == 'dinov2'
    ckpt = convert_state_dict(sd, 'dinov2', keep_final_norm=True, path='dinov2.pth')
    cfg = ckpt['meta']['backbone_cfg']
    assert cfg['patch_size'] == 14 and cfg['img_size'] == 56
    assert cfg.get('num_register_tokens', 0) == registers and cfg['layer_scale_init_value'] > 0
    if layout == 'hub':
        assert 'mask_token' in json.dumps(ckpt['meta']['dropped'])
    vit = _ours(ckpt)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ours, theirs = vit(x)[-1], _timm_tokens(model, x, registers)
    assert ours.shape == (2, 1 + 16, 128)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # another input size: the patch positions are interpolated (bicubic, as mmpretrain does;
    # timm's and torch.hub's resampling differ in detail, so only the native grid is exact)
    assert vit(torch.randn(1, 3, 84, 70))[-1].shape == (1, 1 + 6 * 5, 128)


def test_registers_are_dropped_from_every_output():
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=14, img_size=56, num_register_tokens=4,
                                 layer_scale_init_value=1e-5, num_prototypes=8)
    (fmap, ), extras = vit(torch.randn(2, 3, 56, 56), return_attn=True, return_block_input=True)
    assert fmap.shape == (2, 128, 4, 4) and extras['attn'].shape == (2, 2, 16)
    assert extras['block_input'].shape == (2, 64, 4, 4)
    vit.out_type = 'oaf_raw'
    assert vit(torch.randn(1, 3, 56, 56))[-1].shape == (1, 17, 128)
    # the registers change the tokens: they are attended to
    (plain, ) = vit(torch.zeros(1, 3, 56, 56))
    with torch.no_grad():
        vit.register_tokens.add_(1.0)
    assert not torch.allclose(plain, vit(torch.zeros(1, 3, 56, 56))[0])
    frozen = CoTAPVisionTransformer(arch='tiny', patch_size=14, img_size=56,
                                    num_register_tokens=2, frozen_stages=2)
    assert not frozen.register_tokens.requires_grad
    with pytest.raises(ValueError, match='num_register_tokens'):
        CoTAPVisionTransformer(arch='tiny', num_register_tokens=-1)


def test_convert_tool_and_export_round_trip(tmp_path):
    model = _timm_dinov2(4, final_norm=False, seed=1)
    src = tmp_path / 'dinov2_vits14_reg4.pth'
    torch.save(_hub_layout(model.state_dict()), src)
    dst = tmp_path / 'converted.pth'
    assert load_tool('model_converters/convert').main(
        ['--src-format', 'dinov2', str(src), str(dst)]) == 0
    exported = tmp_path / 'trunk.safetensors'
    assert load_tool('model_converters/export').main([str(dst), str(exported)]) == 0
    import safetensors.torch as st
    from safetensors import safe_open
    with safe_open(str(exported), 'pt') as f:
        kwargs = json.loads(f.metadata()['timm_kwargs'])
    assert kwargs['reg_tokens'] == 4 and kwargs['no_embed_class']
    back = VisionTransformer(**kwargs).eval()
    back.load_state_dict(st.load_file(str(exported)), strict=True)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(back.forward_features(x), model.forward_features(x),
                                   rtol=1e-5, atol=1e-5)


def test_two_iterations_of_the_dinov2_reg_config(tmp_path):
    """configs/cotap_vit-s14_dinov2-reg_coco.py as it is (ViT-S/14, 4 registers, the full heads),
    initialised from a random timm `vit_small_patch14_reg4_dinov2` converted by convert.py,
    trains 2 iterations on CPU through tools/train.py and writes a checkpoint."""
    import os
    import os.path as osp
    import subprocess
    import sys

    from conftest import ROOT, make_cotap_workspace
    config = f"""
_base_ = '{ROOT}/configs/cotap_vit-s14_dinov2-reg_coco.py'
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(coco=dict(num_neighbors=3), imagenet=dict(num_neighbors=3)))
train_cfg = dict(max_iters=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""
    root = make_cotap_workspace(tmp_path, config)
    torch.manual_seed(0)
    release = timm.create_model('vit_small_patch14_reg4_dinov2', pretrained=False)
    torch.save(release.state_dict(), tmp_path / 'release.pth')
    assert release.pos_embed.shape[1] == 37 * 37  # the release grid
    (tmp_path / 'checkpoints').mkdir()
    assert load_tool('model_converters/convert').main(
        ['--src-format', 'dinov2', str(tmp_path / 'release.pth'),
         str(tmp_path / 'checkpoints/dinov2-reg_vit-s14.pth')]) == 0
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py',
                          '--work-dir', 'work_dirs/s14'], cwd=root, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(tmp_path / 'work_dirs/s14/iter_2.pth', map_location='cpu',
                       weights_only=False)['state_dict']
    assert state['backbone.register_tokens'].shape == (1, 4, 384)
    assert state['backbone.pos_embed'].shape == (1, 1 + 16 * 16, 384)
    # the init was loaded: the LayerScale values are the release's, moved by two steps at most
    ls = release.blocks[0].ls1.gamma
    torch.testing.assert_close(state['backbone.layers.0.attn.gamma1.weight'], ls, atol=1e-2,
                               rtol=0)
