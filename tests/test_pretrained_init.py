"""CoTAPPretrained: strict pretrained loading with allowed-missing OAF keys and converter hints."""
import logging

import pytest
import torch
from mmengine.registry import WEIGHT_INITIALIZERS

from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.models.utils import BackboneWeightsError as PretrainedLoadError
from cotap_mm.models.utils import CoTAPPretrained, pretrained_init
from cotap_mm.registry import MODELS
from cotap_mm.converters import convert_state_dict

D, L, P, IMG, FFN = 64, 2, 16, 48, 256


def dino_vit(seed=0):
    """A DINO-layout ViT state dict of arch 'tiny' (3x3 patch grid at 48 px)."""
    g = torch.Generator().manual_seed(seed)
    sd = {'cls_token': torch.randn(1, 1, D, generator=g),
          'pos_embed': torch.randn(1, 10, D, generator=g),
          'patch_embed.proj.weight': torch.randn(D, 3, P, P, generator=g),
          'patch_embed.proj.bias': torch.randn(D, generator=g),
          'norm.weight': torch.ones(D), 'norm.bias': torch.zeros(D)}
    for i in range(L):
        for name, shape in (('norm1', (D, )), ('attn.qkv', (3 * D, D)), ('attn.proj', (D, D)),
                            ('norm2', (D, )), ('mlp.fc1', (FFN, D)), ('mlp.fc2', (D, FFN))):
            sd[f'blocks.{i}.{name}.weight'] = torch.randn(*shape, generator=g)
            sd[f'blocks.{i}.{name}.bias'] = torch.randn(shape[0], generator=g)
    return sd


@pytest.fixture
def converted(tmp_path):
    ckpt = convert_state_dict(dino_vit(), 'dino')
    path = tmp_path / 'dino_tiny.pth'
    torch.save(ckpt, path)
    return str(path), {k[len('backbone.'):]: v for k, v in ckpt['state_dict'].items()}


def backbone(checkpoint, img_size=IMG, **init):
    cfg = dict(type='CoTAPPretrained', checkpoint=checkpoint, prefix='backbone.', **init)
    return CoTAPVisionTransformer(arch='tiny', patch_size=P, img_size=img_size, num_prototypes=4,
                                  init_cfg=cfg)


def test_registered_and_built_from_config(converted):
    assert WEIGHT_INITIALIZERS.get('CoTAPPretrained') is CoTAPPretrained
    model = MODELS.build(dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=P,
                              img_size=IMG, num_prototypes=4,
                              init_cfg=dict(type='CoTAPPretrained', checkpoint=converted[0],
                                            prefix='backbone.')))
    model.init_weights()
    torch.testing.assert_close(model.cls_token, converted[1]['cls_token'])


def test_loads_everything_and_keeps_it_through_init_weights(converted, monkeypatch):
    path, expect = converted
    model = backbone(path)
    kernel_before = model.oaf.kernel.detach().clone()
    logged = []
    monkeypatch.setattr(pretrained_init, 'print_log',
                        lambda msg, logger=None, level=logging.INFO: logged.append((level, msg)))
    model.init_weights()
    own = model.state_dict()
    for k, v in expect.items():
        # includes pos_embed (mmpretrain re-draws it unless init_cfg says Pretrained) and the
        # FFN weights (TransformerEncoderLayer.init_weights re-draws them): both must survive
        assert torch.equal(own[k], v), k
    # the OAF is not in a DINO checkpoint: allowed-missing, initialised by its own init_weights
    assert not torch.equal(model.oaf.kernel, kernel_before)
    warnings = [msg for level, msg in logged if level == logging.WARNING]
    assert len(warnings) == 1 and 'allow_missing' in warnings[0] and 'oaf.kernel' in warnings[0]


def test_pos_embed_of_another_grid_is_resized(converted):
    model = backbone(converted[0], img_size=64)  # 4x4 grid vs the checkpoint's 3x3
    model.init_weights()
    assert model.pos_embed.shape == (1, 17, D)
    torch.testing.assert_close(model.pos_embed[:, 0], converted[1]['pos_embed'][:, 0])
    assert torch.equal(model.layers[1].ffn.layers[1].weight,
                       converted[1]['layers.1.ffn.layers.1.weight'])


def test_unexpected_missing_and_mismatched_keys_raise(tmp_path, converted):
    _, sd = converted

    def write(state, name):
        path = tmp_path / name
        torch.save({'state_dict': {'backbone.' + k: v for k, v in state.items()}}, path)
        return str(path)

    extra = write(dict(sd, **{'ln1.weight': torch.ones(D)}), 'extra.pth')
    with pytest.raises(PretrainedLoadError, match=r"unexpected keys: \['ln1.weight'\]"):
        backbone(extra).init_weights()
    missing = write({k: v for k, v in sd.items() if k != 'layers.1.ln2.bias'}, 'missing.pth')
    with pytest.raises(PretrainedLoadError, match=r"missing keys .*\['layers.1.ln2.bias'\]"):
        backbone(missing).init_weights()
    with pytest.raises(PretrainedLoadError, match=r"missing keys .*'oaf.kernel'"):
        backbone(converted[0], allow_missing=()).init_weights()
    model = CoTAPVisionTransformer(
        arch=dict(embed_dims=D, num_layers=L, num_heads=2, feedforward_channels=128),
        patch_size=P, img_size=IMG,
        init_cfg=dict(type='CoTAPPretrained', checkpoint=converted[0], prefix='backbone.'))
    with pytest.raises(PretrainedLoadError) as err:
        model.init_weights()
    assert 'layers.0.ffn.layers.0.0.weight: checkpoint (256, 64) vs model (128, 64)' in str(
        err.value)


def test_raw_release_names_the_converter_command(tmp_path):
    raw = tmp_path / 'dino_deitsmall16_pretrain.pth'
    torch.save(dino_vit(), raw)
    with pytest.raises(PretrainedLoadError) as err:
        backbone(str(raw)).init_weights()
    msg = str(err.value)
    assert "prefix='backbone.'" in msg
    assert f'python tools/model_converters/convert.py --src-format dino {raw}' in msg
    # without a prefix the raw keys are unexpected: same hint
    model = CoTAPVisionTransformer(arch='tiny', patch_size=P, img_size=IMG, with_oaf=False,
                                   init_cfg=dict(type='CoTAPPretrained', checkpoint=str(raw)))
    with pytest.raises(PretrainedLoadError, match='--src-format dino'):
        model.init_weights()
    # an official CoTAP Lightning state dict (saved weights-only here)
    official = {'net.model.' + k: v for k, v in dino_vit().items() if not k.startswith('norm')}
    official['net.model.kernel'] = torch.randn(4, D, 3, 3)
    path = tmp_path / 'cotap.ckpt'
    torch.save({'state_dict': official}, path)
    with pytest.raises(PretrainedLoadError, match='--src-format cotap-official'):
        backbone(str(path)).init_weights()


def _init_types(obj):
    """Every ``init_cfg['type']`` in a (nested) config dict or list."""
    if isinstance(obj, dict):
        init = obj.get('init_cfg')
        found = [init['type']] if isinstance(init, dict) and 'type' in init else []
        return found + [t for v in obj.values() for t in _init_types(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _init_types(v)]
    return []


def test_no_config_loads_weights_with_lenient_pretrained():
    """mmengine's ``Pretrained`` loads with strict=False and only logs mismatched keys, so every
    config that initialises from a checkpoint uses CoTAPPretrained."""
    import glob
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    configs = sorted(glob.glob(osp.join(root, 'configs', '**', '*.py'), recursive=True))
    checked = 0
    for path in configs:
        types = _init_types(Config.fromfile(path).to_dict())
        assert 'Pretrained' not in types, path
        checked += 'CoTAPPretrained' in types
    assert checked >= 5  # the pretraining, benchmark and demo configs that load weights
