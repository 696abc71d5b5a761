# The demo's dense probe: a linear (1x1 conv) segmentation head on the frozen 2D-wide patch features
# of the demo ViT, on the synthetic scenes in mmseg's layout (docs/method.md §6.1's linear protocol: Adam,
# constant lr 3e-3, logits upsampled to the label size, cross-entropy with 255 ignored).
#   mim train mmseg configs/demo/linear-probe_synthetic.py --cfg-options \
#       model.backbone.init_cfg.checkpoint=work_dirs/demo/cotap_backbone.pth
#   mim test mmseg configs/demo/linear-probe_synthetic.py --checkpoint work_dirs/demo/probe_cotap/iter_300.pth
default_scope = 'mmseg'
custom_imports = dict(imports=['cotap_mm', 'cotap_mm.segmentation'], allow_failed_imports=False)

data_root = 'work_dirs/demo/data/seg'
demo_arch = dict(embed_dims=96, num_layers=4, num_heads=3, feedforward_channels=384)
feat_channels = 2 * demo_arch['embed_dims']  # concat[ViT, OAF] tokens
img_size = 96
max_iters = 300

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(img_size, img_size)),
    backbone=dict(
        type='CoTAPVisionTransformer',
        arch=demo_arch,
        patch_size=8,
        img_size=64,
        num_prototypes=32,
        out_type='featmap',
        frozen_stages=demo_arch['num_layers'],  # everything frozen, the OAF included
        init_cfg=dict(type='CoTAPPretrained', checkpoint='work_dirs/demo/cotap_backbone.pth',
                      prefix='backbone.')),
    decode_head=dict(
        type='FCNHead',
        in_channels=feat_channels,
        channels=feat_channels,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.,
        num_classes=12,  # cotap_mm.datasets.synthetic.CLASSES: 8 things + 4 stuff
        norm_cfg=None,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0,
                         avg_non_ignore=True)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

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
dataset = dict(type='SyntheticScenesDataset', data_root=data_root)
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
# the held-out test split (--num-seg-test of tools/make_synthetic_scenes.py): every development
# choice is made on val, the protocol's tables report test (docs/protocol.md)
test_dataloader = dict(
    val_dataloader,
    dataset=dict(val_dataloader['dataset'],
                 data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test')))
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=3e-3))
param_scheduler = []  # constant lr, as the released linear protocol (docs/method.md §6.1, §7.13)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
