"""Checkpoint converters: synthetic checkpoints in every source layout, converted and checked
against reference forwards written here in plain torch (DINO ViT, official CoTAP OAF)."""
import argparse
import fractions
import math
import os
import os.path as osp
import subprocess
import sys

import pytest

from conftest import load_tool
import torch
import torch.nn.functional as F
from mmengine.logging import MessageHub

from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.converters import (CheckpointConversionError, convert_checkpoint,
                                 convert_state_dict, detect_layout, extract_backbone)
from cotap_mm.utils.fileio import atomic_save

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
format_summary = load_tool('model_converters/_common').format_summary
D, L, HEADS, P, IMG, FFN, M = 64, 2, 2, 16, 48, 256, 4  # arch 'tiny', a 3x3 patch grid
N = (IMG // P)**2


# -- synthetic source checkpoints ----------------------------------------------------------------


def dino_vit(seed=0, final_norm=True):
    """A DINO-layout ViT state dict (timm/DINO key names) with random, well-scaled weights."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.1):
        return torch.randn(*shape, generator=g) * s

    sd = {
        'cls_token': r(1, 1, D, s=1.),
        'pos_embed': r(1, 1 + N, D, s=0.5),
        'patch_embed.proj.weight': r(D, 3, P, P, s=0.05),
        'patch_embed.proj.bias': r(D),
    }
    for i in range(L):
        b = f'blocks.{i}.'
        sd.update({
            b + 'norm1.weight': 1 + r(D), b + 'norm1.bias': r(D),
            b + 'attn.qkv.weight': r(3 * D, D, s=0.2), b + 'attn.qkv.bias': r(3 * D),
            b + 'attn.proj.weight': r(D, D), b + 'attn.proj.bias': r(D),
            b + 'norm2.weight': 1 + r(D), b + 'norm2.bias': r(D),
            b + 'mlp.fc1.weight': r(FFN, D), b + 'mlp.fc1.bias': r(FFN),
            b + 'mlp.fc2.weight': r(D, FFN), b + 'mlp.fc2.bias': r(D),
        })
    if final_norm:
        sd.update({'norm.weight': 1 + r(D), 'norm.bias': r(D)})
    return sd


def dino_head(seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    return {'head.mlp.0.weight': torch.randn(32, D, generator=g),
            'head.mlp.0.bias': torch.zeros(32),
            'head.last_layer.weight_g': torch.ones(16, 1),
            'head.last_layer.weight_v': torch.randn(16, 32, generator=g)}


def official_vit(seed=0):
    """Official CoTAP ViT (vision_transformer_depth.py): no final norm, a top-level `kernel`,
    OAF norms in every block, projection heads."""
    g = torch.Generator().manual_seed(200 + seed)
    sd = dino_vit(seed, final_norm=False)
    sd['kernel'] = torch.randn(M, D, 3, 3, generator=g)
    for i in range(L):
        b = f'blocks.{i}.'
        sd[b + 'norm_in.weight'] = 1 + 0.1 * torch.randn(D, generator=g)
        sd[b + 'norm_in.bias'] = 0.1 * torch.randn(D, generator=g)
        for n in ('norm_out_patch', 'norm_out_cls'):
            sd[b + n + '.weight'] = 1 + 0.1 * torch.randn(2 * D, generator=g)
            sd[b + n + '.bias'] = 0.1 * torch.randn(2 * D, generator=g)
    sd['projection_heads.0.projection_head.0.weight'] = torch.randn(32, 2 * D, generator=g)
    sd['projection_heads.0.last_layer.weight_g'] = torch.ones(8, 1)
    return sd


def prefixed(sd, prefix):
    return {prefix + k: v for k, v in sd.items()}


def save(obj, path):
    torch.save(obj, str(path))
    return str(path)


# -- reference forwards (source layouts, plain torch) --------------------------------------------


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[name + '.weight'], sd[name + '.bias'], eps=1e-6)


def _mlp(x, sd, b):
    x = F.linear(x, sd[b + 'mlp.fc1.weight'], sd[b + 'mlp.fc1.bias'])
    return F.linear(F.gelu(x), sd[b + 'mlp.fc2.weight'], sd[b + 'mlp.fc2.bias'])


def ref_dino_tokens(sd, img):
    """DINO ``VisionTransformer`` forward up to the last block (before ``norm``), at the
    checkpoint's own resolution (no pos-embed interpolation): (B, 1+N, D)."""
    x = F.conv2d(img, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'], stride=P)
    x = x.flatten(2).transpose(1, 2)
    B = x.shape[0]
    x = torch.cat([sd['cls_token'].expand(B, -1, -1), x], dim=1) + sd['pos_embed']
    for i in range(L):
        b = f'blocks.{i}.'
        T = x.shape[1]
        qkv = F.linear(_ln(x, sd, b + 'norm1'), sd[b + 'attn.qkv.weight'], sd[b + 'attn.qkv.bias'])
        q, k, v = qkv.reshape(B, T, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (D // HEADS)**-0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(B, T, D)
        x = x + F.linear(y, sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'])
        x = x + _mlp(_ln(x, sd, b + 'norm2'), sd, b)
    return x


def ref_official_oaf(sd, img):
    """Official ``Block.forward_kernel`` of the last block (models/vit/vision_transformer_depth.py
    of the CoTAP release, re-typed from its code): (B, 1+N, 2D)."""
    x = ref_dino_tokens(sd, img)
    b = f'blocks.{L - 1}.'
    dh = D // HEADS
    kn = _ln(sd['kernel'].permute(0, 2, 3, 1), sd, b + 'norm_in')  # (M, 3, 3, D)
    w, bias = sd[b + 'attn.qkv.weight'], sd[b + 'attn.qkv.bias']

    def finish(x_in, y):
        y = F.linear(y, sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'])
        xf = x_in + y
        return xf + _mlp(_ln(xf, sd, b + 'norm2'), sd, b)

    # patch branch: Attention.forward_kernel_patch
    xp = x[:, 1:]
    B, Np, C = xp.shape
    side = int(math.sqrt(Np))
    q = F.linear(_ln(xp, sd, b + 'norm1'), w, bias).reshape(B, Np, 3, HEADS, dh)
    q = q.permute(2, 0, 3, 1, 4)[0]
    qkv_ker = F.linear(kn, w, bias).reshape(M, 3, 3, 3, HEADS, dh).permute(3, 4, 0, 1, 2, 5)
    k_ker, v_ker = qkv_ker[1], qkv_ker[2]
    q = q.reshape(B, HEADS, side, side, -1).permute(1, 0, 4, 2, 3)
    k_ker = k_ker.permute(0, 1, 4, 2, 3)
    attn = torch.stack([F.conv2d(q[i], k_ker[i], padding=1) for i in range(HEADS)]) * M**-0.5
    attn = attn.permute(1, 0, 3, 4, 2).reshape(B, HEADS, Np, M).softmax(-1)
    v = v_ker.reshape(1, HEADS, M, 9, -1).mean(3)
    y = (attn @ v).transpose(1, 2).reshape(B, Np, C)
    patch = _ln(torch.cat([xp, finish(xp, y)], -1), sd, b + 'norm_out_patch')
    # CLS branch: Attention.forward_kernel_cls
    xc = x[:, :1]
    q = F.linear(_ln(xc, sd, b + 'norm1'), w, bias).reshape(B, 1, 3, HEADS, dh)
    q = q.permute(2, 0, 3, 1, 4)[0]
    kv = F.linear(kn, w, bias).reshape(M, 9, 3, HEADS, dh).mean(1).permute(1, 2, 0, 3)
    attn = (q @ kv[1].transpose(-1, -2) * M**-0.5).softmax(-1)
    y = (attn @ kv[2]).transpose(1, 2).reshape(B, 1, C)
    cls = _ln(torch.cat([xc, finish(xc, y)], -1), sd, b + 'norm_out_cls')
    return torch.cat([cls, patch], dim=1)


def load_ours(ckpt, with_oaf=False, out_type='raw'):
    """CoTAPVisionTransformer (arch 'tiny') with the converted weights loaded *strictly*."""
    model = CoTAPVisionTransformer(arch='tiny', patch_size=P, img_size=IMG, with_oaf=with_oaf,
                                   num_prototypes=M, out_type=out_type).eval()
    sd = {k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()}
    assert all(k.startswith('backbone.') for k in ckpt['state_dict'])
    model.load_state_dict(sd, strict=True)
    return model


IMGS = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(7))


def assert_same_features(ckpt, src_sd):
    with torch.no_grad():
        ours = load_ours(ckpt)(IMGS)[0]
        ref = ref_dino_tokens(src_sd, IMGS)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


# -- per source format ---------------------------------------------------------------------------


def test_dino_pretrain_release_matches_reference_and_mmpretrain(tmp_path):
    src_sd = dino_vit(0)
    src = save(src_sd, tmp_path / 'dino_deitsmall16_pretrain.pth')
    ckpt = convert_checkpoint(src, 'dino')
    meta = ckpt['meta']
    assert meta['arch'] == dict(embed_dims=D, num_layers=L, num_heads=HEADS,
                                feedforward_channels=FFN)
    assert (meta['patch_size'], meta['img_size'], meta['with_oaf']) == (P, IMG, False)
    assert meta['source']['which'] == 'teacher' and meta['source']['which_default']
    dropped = {k for keys in meta['dropped'].values() for k in keys}
    assert dropped == {'norm.weight', 'norm.bias'}
    assert 'backbone.layers.1.ffn.layers.0.0.weight' in ckpt['state_dict']
    assert_same_features(ckpt, src_sd)
    # the ViT part loads strictly into stock mmpretrain VisionTransformer (final_norm=False)
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(arch=meta['arch'], patch_size=P, img_size=IMG, final_norm=False,
                            out_type='raw', qkv_bias=True, norm_cfg=dict(type='LN', eps=1e-6))
    vit.load_state_dict({k[9:]: v for k, v in ckpt['state_dict'].items()}, strict=True)
    vit.eval()  # (mmpretrain's BaseBackbone.train returns None, so no chaining)
    with torch.no_grad():
        torch.testing.assert_close(vit(IMGS)[0], ref_dino_tokens(src_sd, IMGS),
                                   rtol=1e-4, atol=1e-4)
    assert 'final norm' in format_summary(ckpt)


def test_keep_final_norm_maps_to_ln1(tmp_path):
    src = save(dino_vit(0), tmp_path / 'd.pth')
    ckpt = convert_checkpoint(src, 'dino', keep_final_norm=True)
    assert 'backbone.ln1.weight' in ckpt['state_dict'] and ckpt['meta']['final_norm']
    assert not ckpt['meta']['dropped']


def test_dino_full_checkpoint_teacher_and_student(tmp_path):
    student, teacher = dino_vit(1), dino_vit(2)
    src = save({'student': prefixed({**student, **dino_head(1)}, 'module.backbone.')
                | prefixed(dino_head(1), 'module.'),
                'teacher': prefixed(teacher, 'backbone.') | prefixed(dino_head(2), ''),
                'epoch': 100, 'args': argparse.Namespace(arch='vit_small', lr=0.1)},
               tmp_path / 'dino_full_checkpoint.pth')
    ckpt = convert_checkpoint(src, 'dino')  # default: teacher; Namespace loads weights-only
    assert ckpt['meta']['source']['prefix'] == 'backbone.'
    assert ckpt['meta']['source']['loaded_with'] == 'torch.load(weights_only=True)'
    assert_same_features(ckpt, teacher)
    ckpt_s = convert_checkpoint(src, 'dino', which='student')
    assert ckpt_s['meta']['source']['prefix'] == 'module.backbone.'
    assert_same_features(ckpt_s, student)
    dropped = {k for keys in ckpt_s['meta']['dropped'].values() for k in keys}
    assert 'head.mlp.0.weight' in dropped  # the head inside the backbone prefix is dropped


def test_ibot_teacher_release_and_full_checkpoint(tmp_path):
    teacher = dino_vit(3)
    teacher['masked_embed'] = torch.zeros(1, D)
    src = save({'state_dict': teacher}, tmp_path / 'checkpoint_teacher.pth')
    ckpt = convert_checkpoint(src, 'ibot')
    assert ckpt['meta']['source']['container'] == 'state_dict'
    assert any('masked_embed' in keys for keys in ckpt['meta']['dropped'].values())
    assert_same_features(ckpt, teacher)
    with pytest.raises(CheckpointConversionError, match='holds a single backbone'):
        convert_checkpoint(src, 'ibot', which='student')
    full = save({'teacher': prefixed(teacher, 'backbone.'),
                 'student': prefixed(dino_vit(4), 'module.backbone.')}, tmp_path / 'ck.pth')
    assert_same_features(convert_checkpoint(full, 'ibot'), teacher)


def test_mugs_drops_relation_blocks(tmp_path):
    teacher = dino_vit(5)
    teacher['relation_blocks.0.norm1.weight'] = torch.ones(D)
    teacher['relation_blocks.0.attn.qkv.weight'] = torch.ones(3 * D, D)
    extras = {'instance_head.projector.0.weight': torch.ones(8, D),
              'group_head.last_layer.weight_g': torch.ones(4, 1)}
    src = save({'teacher': prefixed(teacher, 'backbone.') | extras,
                'student': prefixed(dino_vit(6), 'module.backbone.')}, tmp_path / 'mugs.pth')
    assert detect_layout(torch.load(src))['format'] == 'mugs'
    ckpt = convert_checkpoint(src, 'mugs')
    dropped = {k for keys in ckpt['meta']['dropped'].values() for k in keys}
    assert {'relation_blocks.0.norm1.weight', 'relation_blocks.0.attn.qkv.weight'} <= dropped
    assert ckpt['meta']['ignored_outside_prefix']['count'] == 2  # the heads
    assert_same_features(ckpt, teacher)


def test_leopart_lightning_needs_unsafe_pickle_and_picks_student(tmp_path):
    student, teacher = dino_vit(7), dino_vit(8)
    sd = prefixed(student, 'model.') | prefixed(teacher, 'teacher.')
    sd['model.prototypes.weight'] = torch.randn(10, 32)
    sd['model.head.0.weight'] = torch.randn(32, D)
    # Lightning pickles hyper-parameters as Python objects: weights_only refuses the file
    src = save({'state_dict': sd, 'hyper_parameters': {'lr': fractions.Fraction(1, 3)},
                'pytorch-lightning_version': '1.4.0'}, tmp_path / 'leopart.ckpt')
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(src, 'leopart')
    assert 'leopart.ckpt' in str(err.value) and '--unsafe-pickle' in str(err.value)
    ckpt = convert_checkpoint(src, 'leopart', unsafe_pickle=True)
    assert ckpt['meta']['source']['which'] == 'student'
    assert 'weights_only=False' in ckpt['meta']['source']['loaded_with']
    assert_same_features(ckpt, student)
    assert_same_features(convert_checkpoint(src, 'leopart', which='teacher', unsafe_pickle=True),
                         teacher)


def test_timm_layout(tmp_path):
    sd = dino_vit(9)
    sd.update({'fc_norm.weight': torch.ones(D), 'fc_norm.bias': torch.zeros(D),
               'head.weight': torch.randn(1000, D), 'head.bias': torch.zeros(1000)})
    src = save(sd, tmp_path / 'vit_small_patch16_224.pth')
    assert detect_layout(sd)['format'] == 'timm'
    ckpt = convert_checkpoint(src, 'timm')
    assert ckpt['meta']['source']['which'] is None
    dropped = {k for keys in ckpt['meta']['dropped'].values() for k in keys}
    assert dropped == {'fc_norm.weight', 'fc_norm.bias', 'head.weight', 'head.bias',
                       'norm.weight', 'norm.bias'}
    assert_same_features(ckpt, sd)
    with pytest.raises(CheckpointConversionError, match='drop --which'):
        convert_checkpoint(src, 'timm', which='teacher')


def test_cotap_official_release_oaf_matches_official_forward(tmp_path):
    student, teacher = official_vit(0), official_vit(1)
    sd = prefixed(student, 'net.model.') | prefixed(teacher, 'net_teacher.model.')
    sd['tester.0.classifier.weight'] = torch.randn(27, 2 * D)  # other Lightning sub-modules
    src = save({'state_dict': sd, 'hyper_parameters': {'cfg': fractions.Fraction(1, 2)}},
               tmp_path / 'cotap.ckpt')
    assert detect_layout(torch.load(src, weights_only=False))['format'] == 'cotap-official'
    ckpt = convert_checkpoint(src, 'cotap-official', unsafe_pickle=True)
    meta = ckpt['meta']
    assert meta['source']['which'] == 'student' and meta['with_oaf']
    assert meta['num_prototypes'] == M and meta['backbone_cfg']['with_oaf']
    state = ckpt['state_dict']
    torch.testing.assert_close(state['backbone.oaf.kernel'], student['kernel'])
    torch.testing.assert_close(state['backbone.oaf.norm_out_cls.bias'],
                               student[f'blocks.{L - 1}.norm_out_cls.bias'])
    dropped = {k for keys in meta['dropped'].values() for k in keys}
    assert 'blocks.0.norm_in.weight' in dropped  # unused OAF norms of earlier blocks
    assert 'projection_heads.0.projection_head.0.weight' in dropped
    with torch.no_grad():
        ours = load_ours(ckpt, with_oaf=True, out_type='oaf_raw')(IMGS)[0]
        torch.testing.assert_close(ours, ref_official_oaf(student, IMGS), rtol=1e-4, atol=1e-4)
        fmap = load_ours(ckpt, with_oaf=True, out_type='featmap')(IMGS)[0]
        assert fmap.shape == (2, 2 * D, IMG // P, IMG // P)
    ckpt_t = convert_checkpoint(src, 'cotap-official', which='teacher', unsafe_pickle=True)
    torch.testing.assert_close(ckpt_t['state_dict']['backbone.oaf.kernel'], teacher['kernel'])
    with torch.no_grad():
        ours_t = load_ours(ckpt_t, with_oaf=True, out_type='oaf_raw')(IMGS)[0]
        torch.testing.assert_close(ours_t, ref_official_oaf(teacher, IMGS), rtol=1e-4,
                                   atol=1e-4)


# -- failures --------------------------------------------------------------------------------------


def test_resnet_file_gives_readable_layout_error(tmp_path):
    resnet = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.ones(64),
              'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1), 'fc.weight': torch.zeros(10, 8)}
    src = save(resnet, tmp_path / 'resnet50.pth')
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(src, 'dino')
    msg = str(err.value)
    assert 'resnet50.pth' in msg and "'conv1.weight'" in msg and '4 in total' in msg
    assert 'does not look like any supported ViT layout' in msg


def test_wrong_src_format_names_the_right_one(tmp_path):
    src = save(dino_vit(0), tmp_path / 'dino.pth')
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(src, 'leopart')
    msg = str(err.value)
    assert "'model.'" in msg  # the prefixes it looked for
    assert 'python tools/model_converters/convert.py --src-format dino' in msg


def test_unknown_backbone_key_and_non_checkpoint_file(tmp_path):
    sd = dino_vit(0)
    sd['blocks.0.mlp.w3.weight'] = torch.ones(D, D)  # SwiGLU: CoTAPVisionTransformer has none
    with pytest.raises(CheckpointConversionError, match=r"match no conversion rule.*mlp\.w3"):
        convert_state_dict(sd, 'dino')
    text = tmp_path / 'notes.txt'
    text.write_text('not a checkpoint')
    with pytest.raises(CheckpointConversionError, match='notes.txt: not a readable torch'):
        convert_checkpoint(str(text), 'dino')


def test_shape_mismatch_with_explicit_arch(tmp_path):
    src = save(dino_vit(0), tmp_path / 'vit_tiny.pth')
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(src, 'dino', arch='small')  # a 64-d checkpoint into ViT-S (384-d)
    msg = str(err.value)
    assert 'shape mismatches' in msg and 'vit_tiny.pth' in msg
    assert 'layers.0.attn.qkv.weight: checkpoint (192, 64) vs model (1152, 384)' in msg
    assert 'drop --arch' in msg
    # missing blocks (a truncated checkpoint) are reported as missing keys
    sd = dino_vit(0)
    del sd['blocks.1.mlp.fc2.bias']
    with pytest.raises(CheckpointConversionError, match=r"missing keys: \['layers.1.ffn"):
        convert_state_dict(sd, 'dino')


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    dst = tmp_path / 'out.pth'
    with pytest.raises(Exception):
        atomic_save({'f': lambda: 0}, dst)  # lambdas cannot be pickled
    assert os.listdir(tmp_path) == []
    atomic_save({'a': torch.ones(1)}, dst)
    with pytest.raises(Exception):
        atomic_save({'f': lambda: 0}, dst)
    assert os.listdir(tmp_path) == ['out.pth']  # old file intact, no temporary left
    assert torch.equal(torch.load(dst)['a'], torch.ones(1))


# -- our own CoTAP pretraining checkpoints ---------------------------------------------------------


def _tiny_cotap():
    from cotap_mm.models import CoTAP
    return CoTAP(
        backbone=dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, img_size=64,
                      num_prototypes=4),
        patch_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=16,
                        hidden_channels=32, bottleneck_channels=8),
        cls_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=24,
                      hidden_channels=32, bottleneck_channels=8),
        correspondence_head=dict(type='CorrespondenceHead', pool_sizes=(2, 4), topk=3,
                                 num_neg_draws=1),
        bank=dict(capacity=8, num_insert=2, kmeans_iters=20),
        queue_sizes=(64, 32), queue_inserts=(16, 4),
        data_preprocessor=dict(type='SelfSupDataPreprocessor'))


def test_extract_backbone_from_cotap_checkpoint(tmp_path):
    MessageHub.get_current_instance().update_info('max_iters', 10)
    model = _tiny_cotap()
    with torch.no_grad():
        for p in model.teacher.module.backbone.parameters():
            p.add_(1.)  # make the teacher differ from the student
    hub = MessageHub.get_current_instance()
    hub.update_scalar('train/loss', 1.5)
    # what Runner.save_checkpoint writes (meta, state_dict, message hub with HistoryBuffers)
    src = save({'meta': {'epoch': 0, 'iter': 1}, 'state_dict': model.state_dict(),
                'message_hub': hub.state_dict()}, tmp_path / 'iter_1.pth')
    assert detect_layout(torch.load(src))['format'] == 'cotap-mm'
    ckpt = extract_backbone(src)
    meta = ckpt['meta']
    assert meta['source']['which'] == 'student' and meta['source']['iter'] == 1
    assert meta['with_oaf'] and meta['num_prototypes'] == 4
    assert meta['arch']['num_heads'] == 2
    expect = model.backbone.state_dict()
    assert set(ckpt['state_dict']) == {'backbone.' + k for k in expect}
    for k, v in expect.items():
        assert torch.equal(ckpt['state_dict']['backbone.' + k], v)
    teacher = extract_backbone(src, which='teacher')['state_dict']
    for k, v in model.teacher.module.backbone.state_dict().items():
        assert torch.equal(teacher['backbone.' + k], v)
    assert not torch.equal(teacher['backbone.cls_token'], ckpt['state_dict']['backbone.cls_token'])
    # loads strictly into a fresh backbone
    vit = CoTAPVisionTransformer(arch='tiny', patch_size=16, img_size=64, num_prototypes=4)
    vit.load_state_dict({k[9:]: v for k, v in ckpt['state_dict'].items()}, strict=True)
    # a converted release is not a pretraining checkpoint
    other = save(convert_state_dict(dino_vit(0), 'dino'), tmp_path / 'converted.pth')
    with pytest.raises(CheckpointConversionError, match='no CoTAP teacher backbone'):
        extract_backbone(other, which='teacher')


# -- command line (one subprocess run) --------------------------------------------------


def test_cli_convert_and_extract(tmp_path, capsys):
    src = save({'teacher': prefixed(dino_vit(0), 'backbone.'),
                'student': prefixed(dino_vit(1), 'module.backbone.')}, tmp_path / 'full.pth')
    dst = tmp_path / 'out' / 'dino_tiny.pth'
    dst.parent.mkdir()
    run = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/model_converters/convert.py'), '--src-format',
         'dino', src, str(dst)], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert 'embed_dims=64 num_layers=2' in run.stdout and "prefix='backbone.'" in run.stdout
    ckpt = torch.load(dst)
    assert_same_features(ckpt, dino_vit(0))
    # extract_backbone.py's main() in-process (a second subprocess would cost another ~20 s of
    # imports): it fails loudly (no pretraining teacher in a converted file) and writes nothing
    tool = load_tool('model_converters/extract_backbone')
    bad = tmp_path / 'out' / 'never.pth'
    assert tool.main([str(dst), str(bad), '--which', 'teacher']) == 1
    err = capsys.readouterr().err
    assert 'error:' in err and 'no CoTAP teacher backbone' in err
    assert sorted(os.listdir(tmp_path / 'out')) == ['dino_tiny.pth']
