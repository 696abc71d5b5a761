"""tools/model_converters/export.py and cotap_mm.converters.timm_export: an exported trunk loads
strictly into timm's VisionTransformer and gives the backbone's tokens."""
import json

import pytest
import torch

from conftest import load_tool
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer

timm = pytest.importorskip('timm')
safetensors_torch = pytest.importorskip('safetensors.torch')
from safetensors import safe_open  # noqa: E402

ARCH = dict(embed_dims=128, num_layers=2, num_heads=2, feedforward_channels=512)
export = load_tool('model_converters/export')


def _checkpoint(tmp_path, prefix, final_norm=False, patch_size=16):
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch=ARCH, patch_size=patch_size, img_size=64,
                                 final_norm=final_norm, num_prototypes=8, out_type='raw')
    for p in vit.parameters():  # non-trivial norms and biases
        p.data.add_(0.05 * torch.randn_like(p))
    path = tmp_path / f'{prefix.replace(".", "_")}{final_norm}.pth'
    torch.save({'meta': {'iter': 5}, 'state_dict': {prefix + k: v for k, v in
                                                    vit.state_dict().items()}}, path)
    return vit.eval(), path


@pytest.mark.parametrize('prefix,which,final_norm,patch', [
    ('backbone.', 'student', False, 16),
    ('teacher.module.backbone.', 'teacher', True, 8),
])
def test_export_loads_strictly_into_timm_with_equal_tokens(tmp_path, prefix, which, final_norm,
                                                           patch):
    vit, src = _checkpoint(tmp_path, prefix, final_norm, patch)
    dst = tmp_path / 'trunk.safetensors'
    assert export.main([str(src), str(dst), '--which', which]) == 0
    with safe_open(str(dst), 'pt') as f:
        meta = f.metadata()
    kwargs = json.loads(meta['timm_kwargs'])
    assert kwargs['final_norm'] == final_norm and kwargs['patch_size'] == patch
    assert len(json.loads(meta['left_out'])) == 7  # the OAF: kernel + three norms
    model = timm.models.vision_transformer.VisionTransformer(**kwargs).eval()
    model.load_state_dict(safetensors_torch.load_file(str(dst)), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = vit(x)[-1]  # (B, 1 + N, D) last-layer tokens
        theirs = model.forward_features(x)
    assert ours.shape == theirs.shape == (2, 1 + (64 // patch) ** 2, 128)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_export_names_the_timm_architecture_and_refuses_bad_input(tmp_path, capsys):
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='small', patch_size=16, img_size=224, with_oaf=False)
    src = tmp_path / 'vits.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}}, src)
    dst = tmp_path / 'vits.safetensors'
    assert export.main([str(src), str(dst)]) == 0
    with safe_open(str(dst), 'pt') as f:
        assert f.metadata()['timm_name'] == 'vit_small_patch16_224'
    model = timm.create_model('vit_small_patch16_224', pretrained=False, num_classes=0,
                              final_norm=False)
    model.load_state_dict(safetensors_torch.load_file(str(dst)), strict=True)
    capsys.readouterr()
    assert export.main([str(src), str(tmp_path / 'x.safetensors'), '--which', 'teacher']) == 1
    assert 'pass --which student' in capsys.readouterr().err
    assert not (tmp_path / 'x.safetensors').exists()
