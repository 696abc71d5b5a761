# CoTAP ViT-B/16 from DINO: 8 GPUs x 16 (global 128), 210k iterations (docs/method.md §4.6).
_base_ = './cotap_vit-s16_coco.py'
embed_dims = 768
model = dict(
    backbone=dict(arch='base', patch_size=16,
                  init_cfg=dict(checkpoint='checkpoints/dino_vit-b16.pth')),
    patch_head=dict(in_channels=2 * embed_dims),
    cls_head=dict(in_channels=2 * embed_dims))
train_dataloader = dict(batch_size=16)
max_iters = 210000
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=max_iters + 5, eta_min=3e-6, by_epoch=False, begin=0,
         end=max_iters),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', T_max=max_iters + 5,
         eta_min_ratio=10., by_epoch=False, begin=0, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
