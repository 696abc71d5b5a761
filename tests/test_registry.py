"""Registration of cotap_mm components: plain names under default_scope 'mmpretrain' and 'mmseg'.
"""
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine import Config
from mmengine.registry import DefaultScope, Registry

import cotap_mm  # noqa: F401
from cotap_mm.models.backbones import CoTAPVisionTransformer

TINY_VIT = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16)


def _scope(name):
    """A fresh DefaultScope instance (unique instance name per call; the newest is current)."""
    return DefaultScope.get_instance(f'test_registry_{name}_{id(object())}', scope_name=name)


def test_config_custom_imports_builds_under_mmpretrain(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        textwrap.dedent("""
        custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)
        default_scope = 'mmpretrain'
        loss = dict(type='ContinuousAPLoss', tau=0.5, weight_threshold=-0.2, neg_weight=0.1,
                    impl='auto', loss_weight=1.0)
        backbone = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16)
        """))
    cfg = Config.fromfile(str(cfg_file))
    from mmpretrain.registry import MODELS
    _scope(cfg.default_scope)
    assert DefaultScope.get_current_instance().scope_name == 'mmpretrain'
    loss = MODELS.build(cfg.loss)
    assert type(loss).__name__ == 'ContinuousAPLoss'
    backbone = MODELS.build(cfg.backbone)
    assert isinstance(backbone, CoTAPVisionTransformer)
    (feat, ) = backbone(torch.rand(1, 3, 32, 48))
    assert feat.shape == (1, 128, 2, 3)  # 2D-wide: concat[ViT, OAF] of the 64-d tiny arch


def test_build_under_mmseg_scope_and_in_encoder_decoder():
    from mmseg.registry import MODELS as SEG_MODELS
    _scope('mmseg')
    backbone = SEG_MODELS.build(TINY_VIT)
    assert isinstance(backbone, CoTAPVisionTransformer)

    segmentor = SEG_MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                                   std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
            backbone=TINY_VIT,
            decode_head=dict(type='FCNHead', in_channels=128, channels=128, num_convs=0,
                             concat_input=False, num_classes=5, in_index=-1, dropout_ratio=0.,
                             loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))))
    segmentor.eval()
    img = torch.rand(2, 3, 64, 96)  # non-square, divisible by the patch size
    with torch.no_grad():
        logits = segmentor(img, mode='tensor')
        full = segmentor.encode_decode(img, [dict(img_shape=(64, 96))] * 2)
    assert logits.shape == (2, 5, 4, 6)
    assert full.shape == (2, 5, 64, 96)
    assert torch.isfinite(full).all()


def test_child_registry_not_found_by_plain_name():
    """The claim in cotap_mm/registry.py: a child of mmpretrain's MODELS is invisible to
    plain-name lookups under default_scope='mmpretrain' (search goes to ancestors only)."""
    from mmpretrain.registry import MODELS
    child = Registry('model', parent=MODELS, scope='cotap_child_probe')

    @child.register_module()
    class ChildOnlyModule(torch.nn.Module):
        pass

    _scope('mmpretrain')
    assert MODELS.get('ChildOnlyModule') is None
    with pytest.raises(KeyError, match='ChildOnlyModule'):
        MODELS.build(dict(type='ChildOnlyModule'))
    # even building through the child itself: build() switches to the default scope's node
    with pytest.raises(KeyError, match='ChildOnlyModule'):
        child.build(dict(type='ChildOnlyModule'))
    # only a scope prefix reaches it
    assert MODELS.get('cotap_child_probe.ChildOnlyModule') is ChildOnlyModule
    # whereas cotap_mm registers straight into the mmpretrain node
    assert MODELS.get('CoTAPVisionTransformer') is CoTAPVisionTransformer


def test_import_does_not_pull_mmseg_models():
    code = ('import sys, cotap_mm; '
            'print(sorted(m for m in sys.modules if m.startswith("mmseg.models")))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == '[]'


@pytest.mark.parametrize('kwargs, match', [
    (dict(with_cls_token=False), 'with_cls_token'),
    (dict(arch='huge'), 'arch'),
    (dict(patch_size=0), 'patch_size'),
    (dict(out_type='dense'), 'out_type'),
])
def test_backbone_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoTAPVisionTransformer(**{'arch': 'tiny', **kwargs})
