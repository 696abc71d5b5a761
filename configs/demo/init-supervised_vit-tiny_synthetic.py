# The demo's image-level init: the demo ViT trained as an 8-way image classifier on the
# object-centric (ImageNet-style) synthetic scenes, one class folder per dominant object. It is a
# *supervised* stand-in for the DINO init that CoTAP continues from (a short image-level
# self-distillation on these scenes probes below random weights, docs/demo.md): like DINO, it has
# image-level semantics in its CLS token, a final LayerNorm (dropped when the backbone is
# extracted, as CoTAP drops DINO's) and no object-aware filter.
#   python tools/train.py configs/demo/init-supervised_vit-tiny_synthetic.py
custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

data_root = 'work_dirs/demo/data/imagenet'
demo_arch = dict(embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)
max_iters = 4000
crop = 64  # the CoTAP stage's global crop size

model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(num_classes=8, mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], to_rgb=True),
    backbone=dict(type='CoTAPVisionTransformer', arch=demo_arch, patch_size=8, img_size=crop,
                  with_oaf=False, final_norm=True, out_type='cls_token', drop_path_rate=0.),
    head=dict(type='LinearClsHead', num_classes=8, in_channels=demo_arch['embed_dims'],
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, loss_weight=1.0)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=crop, crop_ratio_range=(0.25, 1.0), backend='pillow'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # no hue jitter: the scenes draw a random hue per instance already (and mmcv's pillow hue
    # shift overflows on numpy 2 for negative shifts)
    dict(type='RandomApply', transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4,
                                              saturation=0.2)], prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587,
                                                                                 0.299)),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    # in the main process: a low-priority worker (cotap_vit-tiny_synthetic.py) finds too little
    # idle CPU beside this step to hide its pipeline, measured no faster (docs/benchmarks.md,
    # "Loop overhead")
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', T_max=max_iters - 100, eta_min=1e-5, by_epoch=False,
         begin=100, end=max_iters),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=50)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
