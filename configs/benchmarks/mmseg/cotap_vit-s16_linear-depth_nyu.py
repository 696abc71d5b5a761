# CoTAP ViT-S/16 (frozen), linear depth probe on NYU Depth v2: DINOv2's linear protocol head
# (features upsampled x4, a 1x1 conv to 256 uniform depth bins in [0.001, 10] m, the bin
# expectation; LinearDepthHead) trained with mmseg's SiLogLoss; AdamW lr 5e-3, weight decay
# 0.01, linear warm-up then cosine, 38,400 iterations of batch 2 per GPU. Differences from
# DINOv2's protocol (docs/downstream.md, "Linear depth probe"): the head sees the 2D-wide patch
# features without the CLS token DINOv2 concatenates to each of them, and the augmentation is
# flip + crop only.
#   mim train mmseg configs/benchmarks/mmseg/cotap_vit-s16_linear-depth_nyu.py -G 8 -l pytorch \
#       --cfg-options model.backbone.init_cfg.checkpoint=checkpoints/cotap_vit-s16.pth
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/nyu_depth.py',
    './_base_/default_runtime.py',
]
steps = 38400
model = dict(
    _delete_=True,
    type='DepthEstimator',
    data_preprocessor={{_base_.data_preprocessor}},
    backbone={{_base_.model.backbone}},
    decode_head=dict(type='LinearDepthHead', in_channels=768, num_bins=256, min_depth=1e-3,
                     max_depth=10., upsample=4, loss_decode=dict(type='SiLogLoss')),
    test_cfg=dict(mode='whole'))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-3, betas=(0.9, 0.999), weight_decay=0.01),
    # no decay on biases and other 1-D parameters (DINOv2: none on norms, biases, tokens)
    paramwise_cfg=dict(flat_decay_mult=0.),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=12800),
    dict(type='CosineAnnealingLR', T_max=steps - 12800, eta_min=0., by_epoch=False,
         begin=12800, end=steps),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=steps, val_interval=steps)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(visualization=dict(type='SegVisualizationHook', draw=False))
