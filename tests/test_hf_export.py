"""tools/model_converters/export.py --to hf and cotap_mm.converters.hf_export: a DINO ViT-S/16, a
DINOv2-reg ViT-S/14 and a DINOv3 ViT-S/16 trunk load with transformers' AutoModel as ViTModel,
Dinov2WithRegistersModel and DINOv3ViTModel, every tensor placed, and give the backbone's
tokens; the package does not import transformers itself."""
import ast
import json
import os
import os.path as osp

import pytest
import torch

from conftest import ROOT, load_tool
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer

transformers = pytest.importorskip('transformers')
export = load_tool('model_converters/export')
DINOV3 = dict(rope_base=100., norm_cfg=dict(type='LN', eps=1e-5), layer_scale_init_value=1e-5,
              num_register_tokens=4)


@pytest.mark.parametrize('kwargs,size,hf_class,extra', [
    (dict(patch_size=16, img_size=224), 224, 'ViTModel', dict(add_pooling_layer=False)),
    (dict(patch_size=14, img_size=224, layer_scale_init_value=1e-5, num_register_tokens=4), 224,
     'Dinov2WithRegistersModel', {}),
    (dict(patch_size=16, **DINOV3), 224, 'DINOv3ViTModel', {}),
], ids=['dino-s16', 'dinov2-reg-s14', 'dinov3-s16'])
def test_hf_round_trip(tmp_path, kwargs, size, hf_class, extra):
    torch.manual_seed(0)
    vit = CoTAPVisionTransformer(arch='small', out_type='raw', num_prototypes=8, **kwargs)
    for p in vit.parameters():  # non-trivial norms, biases and LayerScale
        p.data.add_(0.05 * torch.randn_like(p))
    src = tmp_path / 'backbone.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}}, src)
    assert export.main([str(src), str(tmp_path / 'hf'), '--to', 'hf']) == 0
    assert sorted(os.listdir(tmp_path / 'hf')) == ['config.json', 'model.safetensors']
    assert json.loads((tmp_path / 'hf/config.json').read_text())['architectures'] == [hf_class]
    model, info = transformers.AutoModel.from_pretrained(str(tmp_path / 'hf'),
                                                         output_loading_info=True, **extra)
    assert type(model).__name__ == hf_class
    assert not any(info[k] for k in ('missing_keys', 'unexpected_keys', 'mismatched_keys'))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = vit.eval()(x)[-1]
        out = model.eval()(pixel_values=x, output_hidden_states=True)
    registers = kwargs.get('num_register_tokens', 0)
    theirs = out.hidden_states[-1]
    theirs = torch.cat([theirs[:, :1], theirs[:, 1 + registers:]], dim=1)
    assert theirs.shape == ours.shape
    assert ((theirs - ours).abs().max() / ours.abs().max()).item() < 1e-5
    # no final norm in the backbone: Hugging Face's is an identity-weighted LayerNorm
    eps = kwargs.get('norm_cfg', {}).get('eps', 1e-6)
    torch.testing.assert_close(out.last_hidden_state, torch.nn.functional.layer_norm(
        out.hidden_states[-1], (384, ), eps=eps), rtol=1e-5, atol=1e-5)


def test_hf_export_refuses_a_file_destination(tmp_path, capsys):
    vit = CoTAPVisionTransformer(arch='tiny', with_oaf=False)
    src = tmp_path / 'tiny.pth'
    torch.save({'state_dict': {'backbone.' + k: v for k, v in vit.state_dict().items()}}, src)
    (tmp_path / 'taken').write_text('x')
    assert export.main([str(src), str(tmp_path / 'taken'), '--to', 'hf']) == 1
    assert 'writes a directory' in capsys.readouterr().err


def test_the_package_imports_transformers_only_inside_the_export():
    """No module of cotap_mm imports transformers at module level (mmpretrain itself may, when
    it is installed)."""
    for folder, _, files in os.walk(osp.join(ROOT, 'cotap_mm')):
        for name in (f for f in files if f.endswith('.py')):
            with open(osp.join(folder, name)) as f:
                tree = ast.parse(f.read())
            for node in tree.body:  # module level only
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ''] if isinstance(node, ast.ImportFrom) else []
                assert not any(n.split('.')[0] == 'transformers' for n in names), \
                    osp.join(folder, name)
