"""The mixing examples in configs/examples build and train one step."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from cotap_mm.models.necks import ObjectAwareFilter

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_mocov3_with_oaf_neck_trains_one_step():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/examples/mocov3_vit-tiny-oaf-neck_8xb64-coslr-100e_in1k.py'))
    # shrink for a CPU test: 2 layers, 64-px views
    cfg.model.backbone.arch.num_layers = 2
    cfg.model.backbone.img_size = 64
    init_default_scope(cfg.default_scope)
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.models import MoCoV3
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model, MoCoV3) and isinstance(model.neck, ObjectAwareFilter)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    gen = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 256, (4, 3, 64, 64), generator=gen, dtype=torch.uint8)
             for _ in range(2)]
    from mmpretrain.structures import DataSample
    data = dict(inputs=views, data_samples=[DataSample() for _ in range(4)])
    before = model.neck.layer.attn.qkv.weight.detach().clone()
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    # the neck's own transformer layer is trained by the stock algorithm
    assert not torch.equal(before, model.neck.layer.attn.qkv.weight)
