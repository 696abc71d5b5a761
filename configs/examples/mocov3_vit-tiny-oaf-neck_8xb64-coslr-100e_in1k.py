# Mixing example: CoTAP's ObjectAwareFilter as the neck of a *stock* mmpretrain MoCo v3.
#
# Everything but the neck is mmpretrain's own: the plain `VisionTransformer` backbone (tokens out),
# the `MoCoV3` algorithm with its momentum encoder, and the `MoCoV3Head` contrastive head. The
# ObjectAwareFilter owns its transformer-layer weights here (standalone mode) and hands the
# 2D-wide filtered CLS token to the head. One training step of this model runs in
# tests/test_examples.py; for real training point `data_root` at ImageNet and run
#   tools/dist_train.sh configs/examples/mocov3_vit-tiny-oaf-neck_8xb64-coslr-100e_in1k.py 8
# (or mmpretrain's tools/train.py with cotap_mm installed).
custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'

embed_dims = 192  # ViT-Ti
model = dict(
    type='MoCoV3',
    base_momentum=0.01,
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        type='VisionTransformer',  # mmpretrain's, unchanged
        arch=dict(embed_dims=embed_dims, num_layers=12, num_heads=3,
                  feedforward_channels=4 * embed_dims),
        img_size=224,
        patch_size=16,
        qkv_bias=True,
        out_type='raw',  # (B, 1 + N, D) tokens for the filter
        final_norm=True),
    neck=dict(
        type='ObjectAwareFilter',  # from cotap_mm
        embed_dims=embed_dims,
        num_heads=3,
        feedforward_channels=4 * embed_dims,
        num_prototypes=64,
        out_type='cls_token'),  # (B, 2D)
    head=dict(
        type='MoCoV3Head',
        predictor=dict(
            type='NonLinearNeck',
            in_channels=2 * embed_dims,
            hid_channels=1024,
            out_channels=2 * embed_dims,
            num_layers=2,
            with_bias=False,
            with_last_bn=True,
            with_last_bn_affine=False,
            with_last_bias=False,
            with_avg_pool=False),
        loss=dict(type='CrossEntropyLoss', loss_weight=2 * 0.2),
        temperature=0.2))

# data: two views per image, as in mmpretrain's MoCo v3 configs
data_root = 'data/imagenet/'
view_pipeline = [
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.08, 1.), backend='pillow'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2,
                          hue=0.1)],
         prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True, channel_weights=(0.114, 0.587,
                                                                                0.2989)),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='ImageNet',
        data_root=data_root,
        split='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
            dict(type='PackInputs'),
        ]))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2.4e-3, weight_decay=0.1),
    # no decay on LayerNorms (named ln1/ln2 in mmpretrain's ViT), biases and other 1-D
    # parameters; the OAF prototype kernel is a matrix and is decayed
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=90, by_epoch=True, begin=10, end=100,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=100)
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
auto_scale_lr = dict(base_batch_size=4096)
