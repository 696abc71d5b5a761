# The GPU-scale demo's image-level init (`python tools/demo.py --preset gpu`): the supervised
# stand-in for DINO of ../init-supervised_vit-tiny_synthetic.py, on a 6-layer ViT-S/8 (384-d,
# 6 heads) with 128-px crops of the 160-px object-centric scenes, batch 256, fp16 autocast.
_base_ = ['../init-supervised_vit-tiny_synthetic.py']

demo_arch = dict(embed_dims=384, num_layers=6, num_heads=6, feedforward_channels=1536)
max_iters = 2000
crop = 128

model = dict(
    backbone=dict(arch=dict(demo_arch, _delete_=True), img_size=crop),
    head=dict(in_channels=demo_arch['embed_dims']))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=crop, crop_ratio_range=(0.25, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandomApply', transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4,
                                              saturation=0.2)], prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587,
                                                                                 0.299)),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=256, num_workers=8, persistent_workers=True,
                        dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_iters - 100, eta_min=1e-5, by_epoch=False,
         begin=100, end=max_iters),
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
