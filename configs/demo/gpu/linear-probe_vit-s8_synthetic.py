# The GPU-scale demo's dense probe (`python tools/demo.py --preset gpu`): the linear probe of
# ../linear-probe_synthetic.py on the 6-layer ViT-S/8 (2D = 768-wide features) at 160 px.
_base_ = ['../linear-probe_synthetic.py']

demo_arch = dict(embed_dims=384, num_layers=6, num_heads=6, feedforward_channels=1536)
feat_channels = 2 * demo_arch['embed_dims']
img_size = 160
max_iters = 1000

model = dict(
    data_preprocessor=dict(size=(img_size, img_size)),
    backbone=dict(arch=dict(demo_arch, _delete_=True), img_size=128, num_prototypes=64,
                  frozen_stages=demo_arch['num_layers']),
    decode_head=dict(in_channels=feat_channels, channels=feat_channels))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(img_size, img_size), ratio_range=(1.0, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(img_size, img_size)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=64, num_workers=8, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=32, num_workers=8, dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(batch_size=32, num_workers=8, dataset=dict(pipeline=test_pipeline))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
