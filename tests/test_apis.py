"""cotap_mm.apis: the user's backbone with its weights and its features of images."""
import numpy as np
import pytest
import torch
from PIL import Image


def test_init_backbone_and_extract_features(probe_assets, tmp_path):
    from cotap_mm.apis import extract_features, init_backbone
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    cfg = str(probe_assets / 'seg_cfg.py')
    backbone = init_backbone(cfg, str(probe_assets / 'tiny.pth'))
    assert backbone.with_oaf and not backbone.training
    paths = sorted(str(p) for p in (probe_assets / 'seg' / 'img_dir' / 'val').iterdir())
    feats = extract_features(backbone, paths, size=48, batch_size=3)
    assert feats.shape == (4, 128, 3, 3)  # 2D = 2 x 64 channels, a 3 x 3 patch grid
    # the same numbers as the checkpoint's backbone on the config's normalised pixels
    torch.manual_seed(0)
    ref = CoTAPVisionTransformer(arch='tiny', patch_size=16, img_size=(48, 48),
                                 out_type='featmap').eval()
    img = Image.open(paths[0]).convert('RGB').resize((48, 48), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)
    mean, std = torch.tensor([123.675, 116.28, 103.53]), torch.tensor([58.395, 57.12, 57.375])
    x = (x - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        assert torch.allclose(ref(x[None])[-1], feats[:1], atol=1e-5)
    # arrays give what their files give; a plain ViT checkpoint gives D-wide tokens
    arrays = [np.asarray(Image.open(p).convert('RGB')) for p in paths]
    assert torch.allclose(extract_features(backbone, arrays, size=48), feats, atol=1e-5)
    plain = init_backbone(cfg, str(probe_assets / 'tiny_no_oaf.pth'))
    assert not plain.with_oaf and extract_features(plain, paths[:1], 48).shape == (1, 64, 3, 3)
    with pytest.raises(Exception, match='missing.pth: no such file'):
        init_backbone(cfg, str(tmp_path / 'missing.pth'))
