# Smoke configuration: one CoTAP-style training step of a tiny ViT on random images (CPU, seconds).
# Run with `make demo` or `python tools/smoke_demo.py configs/smoke/smoke_tiny.py`.
custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

# student backbone (ViT + object-aware filter); the teacher is a frozen copy of it
model = dict(
    type='CoTAPVisionTransformer',
    arch='tiny',  # 64-d, 2 layers, 2 heads
    patch_size=16,
    img_size=64,
    drop_path_rate=0.,
    out_type='featmap',
    with_oaf=True)  # 2D-wide patch features through the object-aware filter

loss = dict(
    type='ContinuousAPLoss', tau=0.5, weight_threshold=-0.2, neg_weight=0.1, impl='auto',
    loss_weight=1.0)

# no weight decay on biases, LayerNorms and other 1-D parameters, as in the CoTAP schedule
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04),
                     paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))

# generated data: `num_images` random images, two random crops (+ horizontal flip) of each
data = dict(num_images=4, img_size=96, crop_size=64, seed=0)
