"""DINOv3 inits: CoTAPVisionTransformer with RoPE, storage tokens, LayerScale and a masked k bias;
`convert.py --src-format dinov3` from the official, timm and Hugging Face layouts (tokens equal
to timm's DINOv3 blocks at 224 px and 160 x 256), the storage tokens dropped from every output,
and the DINOv3 config trained 2 iterations then exported to timm and Hugging Face."""
import json

import pytest
import torch

from conftest import load_tool
from cotap_mm.converters import CheckpointConversionError, convert_state_dict, detect_layout
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer

timm = pytest.importorskip('timm')
NAMES = ('vit_small_patch16_dinov3_qkvb', 'vit_small_plus_patch16_dinov3_qkvb')


def _timm_dinov3(name, seed=0, **kwargs):
    """A random timm DINOv3 (non-trivial biases, LayerScale, norms, storage tokens) and a copy
    without the final norm (the tokens CoTAP's backbone gives)."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd = model.state_dict()
    model.norm = torch.nn.Identity()
    return model, sd


def _official(sd):
    """timm's keys in the official layout: `storage_tokens`, a qkv bias with a random (masked)
    k part and its `bias_mask`, `ls*.gamma`, `mlp.w1/w2/w3`, bf16 `rope_embed.periods`."""
    swiglu = any('fc1_g' in k for k in sd)
    out, D = {}, sd['cls_token'].shape[-1]
    for k, v in sd.items():
        if k.endswith('attn.q_bias'):
            blk = k[:-len('q_bias')]
            out[blk + 'qkv.bias'] = torch.cat([v, torch.randn(D), sd[blk + 'v_bias']])
            out[blk + 'qkv.bias_mask'] = torch.cat([torch.ones(D), torch.zeros(D), torch.ones(D)])
        elif not k.endswith('attn.v_bias'):
            k = k.replace('reg_token', 'storage_tokens').replace('gamma_1', 'ls1.gamma')
            k = k.replace('gamma_2', 'ls2.gamma').replace('fc1_g', 'w1').replace('fc1_x', 'w2')
            out[k.replace('mlp.fc2', 'mlp.w3') if swiglu else k] = v
    n = D // 6 // 4  # 6 heads of 64 channels: 16 periods
    out['rope_embed.periods'] = (100.**(torch.arange(n) / n)).bfloat16()
    out['mask_token'] = torch.zeros(1, D)
    return out


def _hugging_face(sd, prefix=''):
    """timm's keys in the layout of transformers' DINOv3ViTModel (4.x; `prefix='model.'` for
    the layers as 5.4+ keeps them in memory)."""
    swiglu = any('fc1_g' in k for k in sd)
    D = sd['cls_token'].shape[-1]
    out = {'embeddings.cls_token': sd['cls_token'], 'embeddings.mask_token': torch.zeros(1, 1, D),
           'embeddings.register_tokens': sd['reg_token'],
           'embeddings.patch_embeddings.weight': sd['patch_embed.proj.weight'],
           'embeddings.patch_embeddings.bias': sd['patch_embed.proj.bias'],
           'norm.weight': sd['norm.weight'], 'norm.bias': sd['norm.bias']}
    mlp = (('fc1_g', 'gate_proj'), ('fc1_x', 'up_proj'), ('fc2', 'down_proj')) if swiglu else \
        (('fc1', 'up_proj'), ('fc2', 'down_proj'))
    for i in range(len({k.split('.')[1] for k in sd if k.startswith('blocks.')})):
        b, h = f'blocks.{i}.', f'{prefix}layer.{i}.'
        q, k, v = sd[b + 'attn.qkv.weight'].chunk(3)
        out.update({h + 'attention.q_proj.weight': q, h + 'attention.k_proj.weight': k,
                    h + 'attention.v_proj.weight': v, h + 'attention.q_proj.bias':
                    sd[b + 'attn.q_bias'], h + 'attention.v_proj.bias': sd[b + 'attn.v_bias'],
                    h + 'layer_scale1.lambda1': sd[b + 'gamma_1'],
                    h + 'layer_scale2.lambda1': sd[b + 'gamma_2']})
        for ours, theirs in (('norm1', 'norm1'), ('norm2', 'norm2'),
                             ('attn.proj', 'attention.o_proj'),
                             *((f'mlp.{a}', f'mlp.{c}') for a, c in mlp)):
            for w in ('weight', 'bias'):
                out[f'{h}{theirs}.{w}'] = sd[f'{b}{ours}.{w}']
    return out


def _ours(ckpt):
    cfg = dict(ckpt['meta']['backbone_cfg'])
    cfg.pop('type')
    vit = CoTAPVisionTransformer(**dict(cfg, out_type='raw'))
    vit.load_state_dict({k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()},
                        strict=True)
    return vit.eval()


def _without_storage(tokens, storage=4):
    return torch.cat([tokens[:, :1], tokens[:, 1 + storage:]], dim=1)


def _close(ours, theirs):
    assert ours.shape == theirs.shape
    assert ((ours - theirs).abs().max() / theirs.abs().max()).item() < 1e-5


@pytest.mark.parametrize('layout', ['timm', 'official', 'hf', 'hf5'])
@pytest.mark.parametrize('name', NAMES)
def test_converted_dinov3_gives_timm_tokens(name, layout):
    model, sd = _timm_dinov3(name, depth=4)  # the release's blocks, 4 of them (CPU time)
    src = {'timm': lambda: sd, 'official': lambda: _official(sd), 'hf': lambda: _hugging_face(sd),
           'hf5': lambda: _hugging_face(sd, 'model.')}[layout]()
    assert detect_layout(src)['format'] == 'dinov3'
    ckpt = convert_state_dict(src, 'dinov3', path='dinov3.pth')
    cfg = ckpt['meta']['backbone_cfg']
    assert cfg['rope_base'] == 100 and cfg['norm_cfg']['eps'] == 1e-5 and 'pos_embed' not in cfg
    assert cfg['num_register_tokens'] == 4 and cfg['layer_scale_init_value'] > 0
    assert ('layer_cfgs' in cfg) == ('plus' in name)
    dropped = json.dumps(ckpt['meta']['dropped'])
    assert 'norm.weight' in dropped
    if layout == 'official':
        assert 'rope_embed.periods' in dropped and 'bias_mask' in dropped
    vit = _ours(ckpt)
    for hw in ((224, 224), (160, 256)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            _close(vit(x)[-1], _without_storage(model.forward_features(x)))


def test_hugging_face_layout_of_the_test_is_transformers_own():
    """The Hugging Face layout written above loads strictly into transformers' DINOv3ViTModel,
    whose last hidden state (before its final norm) is timm's."""
    transformers = pytest.importorskip('transformers')
    model, sd = _timm_dinov3(NAMES[1], depth=2)
    hf = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(
        hidden_size=384, num_hidden_layers=2, num_attention_heads=6, intermediate_size=1536,
        use_gated_mlp=True, hidden_act='silu', num_register_tokens=4)).eval()
    hf.load_state_dict(_hugging_face(sd, 'model.'), strict=True)
    x = torch.randn(1, 3, 160, 256)
    with torch.no_grad():
        _close(hf(pixel_values=x, output_hidden_states=True).hidden_states[-1],
               model.forward_features(x))


def test_storage_tokens_rope_and_masked_k_bias():
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='tiny', rope_base=100., num_register_tokens=4,
                                 layer_scale_init_value=0.5, num_prototypes=8,
                                 norm_cfg=dict(type='LN', eps=1e-5)).eval()
    assert vit.pos_embed is None and 'pos_embed' not in vit.state_dict()
    x = torch.randn(2, 3, 64, 96)
    (fmap, ), extras = vit(x, return_attn=True, return_block_input=True)
    assert fmap.shape == (2, 128, 4, 6) and extras['attn'].shape == (2, 2, 24)
    assert extras['block_input'].shape == (2, 64, 4, 6)
    for out_type, shape in (('raw', (2, 25, 64)), ('oaf_raw', (2, 25, 128)),
                            ('cls_token', (2, 128))):
        vit.out_type = out_type
        assert vit(x)[-1].shape == shape
    vit.out_type = 'raw'
    plain = vit(x)[-1]
    with torch.no_grad():  # the k third of qkv.bias is masked: no effect
        vit.layers[0].attn.qkv.bias[64:128].add_(5.)
    torch.testing.assert_close(vit(x)[-1], plain, rtol=0, atol=0)
    with torch.no_grad():  # the storage tokens are attended to
        vit.register_tokens.add_(1.)
    assert not torch.allclose(vit(x)[-1], plain)
    plain = vit(x)[-1]
    vit.rope.periods.mul_(2.)  # RoPE is applied: other periods, other tokens
    assert not torch.allclose(vit(x)[-1], plain)
    vit.rope.periods.div_(2.)
    # the rescaling switch acts in training mode only
    vit.rope.rescale_coords = 2.
    torch.testing.assert_close(vit(x)[-1], vit(x)[-1])
    vit.train()
    assert not torch.allclose(vit(x)[-1], vit(x)[-1])
    with pytest.raises(ValueError, match='rescale_coords'):
        CoTAPVisionTransformer(arch='tiny', rope_base=100., rope_rescale_coords=0.5)


def test_convert_refuses_a_mismatched_arch_and_an_unknown_layout(tmp_path, capsys):
    _, sd = _timm_dinov3(NAMES[0], depth=2)
    with pytest.raises(CheckpointConversionError,
                       match=r'layers\.0\.attn\.qkv\.weight: checkpoint \(1152, 384\) vs '
                       r'model \(2304, 768\)'):
        convert_state_dict(sd, 'dinov3', arch='base', path='s16.pth')
    renamed = {k.replace('reg_token', 'extra_tokens'): v for k, v in sd.items()}
    with pytest.raises(CheckpointConversionError, match="storage tokens.*timm: 'reg_token'"):
        convert_state_dict(renamed, 'dinov3', path='odd.pth')
    src, dst = tmp_path / 'dinov3_vits16.pth', tmp_path / 'out.pth'
    torch.save(_official(sd), src)
    assert load_tool('model_converters/convert').main(
        ['--src-format', 'dinov3', str(src), str(dst)]) == 0
    assert 'dinov3' in capsys.readouterr().out
    assert load_tool('model_converters/convert').main(
        ['--src-format', 'dinov3', '--arch', 'large', str(src), str(tmp_path / 'x.pth')]) == 1
    assert 'vs model (3072, 1024)' in capsys.readouterr().err


def test_two_iterations_of_the_dinov3_config_then_export(tmp_path):
    """configs/cotap_vit-s16_dinov3_coco.py shrunk to 2 layers and 64 / 32 px crops, initialised
    from a random 2-layer timm `vit_small_patch16_dinov3_qkvb` converted by convert.py, trains 2
    iterations on CPU through tools/train.py; its student, extracted and exported to timm and
    Hugging Face, gives the backbone's tokens there."""
    import os
    import os.path as osp
    import subprocess
    import sys

    from conftest import ROOT, make_cotap_workspace
    config = f"""
_base_ = '{ROOT}/configs/cotap_vit-s16_dinov3_coco.py'
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=384, num_layers=2, num_heads=6,
                            feedforward_channels=1536), num_prototypes=8),
    patch_head=dict(num_prototypes=32, hidden_channels=64, bottleneck_channels=16),
    cls_head=dict(num_prototypes=48, hidden_channels=64, bottleneck_channels=16),
    correspondence_head=dict(pool_sizes=(2, 4), topk=3, num_neg_draws=2),
    bank=dict(capacity=16, num_insert=4, kmeans_iters=20),
    queue_sizes=(1024, 256), queue_inserts=(64, 8))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(coco=dict(num_neighbors=3), imagenet=dict(num_neighbors=3),
                 view_pipeline=[dict(type='CoTAPMultiCrop', size_crops=(64, 32),
                                     nmb_crops=(2, 4))]))
train_cfg = dict(max_iters=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""
    make_cotap_workspace(tmp_path, config)
    release, sd = _timm_dinov3(NAMES[0], depth=2)
    torch.save(sd, tmp_path / 'release.pth')
    (tmp_path / 'checkpoints').mkdir()
    tool = load_tool('model_converters/convert')
    assert tool.main(['--src-format', 'dinov3', str(tmp_path / 'release.pth'),
                      str(tmp_path / 'checkpoints/dinov3_vit-s16.pth')]) == 0
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    out = subprocess.run([sys.executable, osp.join(ROOT, 'tools/train.py'), 'tiny.py',
                          '--work-dir', 'work_dirs/dinov3'], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    trained = tmp_path / 'work_dirs/dinov3/iter_2.pth'
    state = torch.load(trained, map_location='cpu', weights_only=False)['state_dict']
    assert state['backbone.register_tokens'].shape == (1, 4, 384)
    assert 'backbone.pos_embed' not in state
    torch.testing.assert_close(state['backbone.layers.0.attn.gamma1.weight'],
                               release.blocks[0].gamma_1, atol=1e-2, rtol=0)  # the init loaded

    backbone = tmp_path / 'backbone.pth'
    assert load_tool('model_converters/extract_backbone').main([str(trained), str(backbone)]) == 0
    export = load_tool('model_converters/export')
    assert export.main([str(backbone), str(tmp_path / 'trunk.safetensors')]) == 0
    assert export.main([str(backbone), str(tmp_path / 'hf'), '--to', 'hf']) == 0
    vit = _ours(torch.load(backbone, map_location='cpu', weights_only=False))
    x = torch.randn(1, 3, 160, 256)
    with torch.no_grad():
        ours = vit(x)[-1]
    import safetensors.torch as st
    from safetensors import safe_open
    with safe_open(str(tmp_path / 'trunk.safetensors'), 'pt') as f:
        meta = f.metadata()
    assert meta['timm_name'] == NAMES[0]
    back = timm.create_model(meta['timm_name'], **json.loads(meta['timm_kwargs'])).eval()
    back.load_state_dict(st.load_file(str(tmp_path / 'trunk.safetensors')), strict=True)
    with torch.no_grad():
        _close(ours, _without_storage(back.forward_features(x)))
    transformers = pytest.importorskip('transformers')
    hf = transformers.AutoModel.from_pretrained(str(tmp_path / 'hf')).eval()
    assert type(hf).__name__ == 'DINOv3ViTModel'
    with torch.no_grad():
        _close(ours, _without_storage(hf(pixel_values=x, output_hidden_states=True)
                                      .hidden_states[-1]))
