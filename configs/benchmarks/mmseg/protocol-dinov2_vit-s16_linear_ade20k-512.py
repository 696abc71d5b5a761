# Protocol "DINOv2 linear" (docs/probes.md, "Evaluation protocols by name"): the linear
# segmentation probe of DINOv2's released mmseg configs (dinov2_vit*14_ade20k_linear_config.py)
# on a CoTAP ViT-S/16, ADE20K (150 classes, label 0 ignored).
#   train: short side 512 x U(0.5, 2.0), 512 x 512 crop (cat_max_ratio 0.75), flip, photometric
#          distortion; batch 8 GPUs x 2; AdamW lr 1e-3, weight decay 1e-4, 1500 linear warm-up
#          iterations from 1e-6 composed with poly (power 1) to 0 over 40k iterations;
#          CrossEntropyLoss averaged over ALL pixels (mmseg's default, ignored ones count as 0)
#   test:  keep-ratio resize to 2048 x 512, 512 x 512 sliding window (stride 341), evaluated on
#          the ORIGINAL label resolution.
# The head is DINOv2's: SyncBN of the features, then the 1x1 conv (BNLinearHead, dropout 0).
# Differs from DINOv2 (table in docs/probes.md): the feature is the 2D-wide CoTAP output of the
# last layer, patch 16 instead of 14.
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/ade20k_mmseg.py',
    './_base_/schedules/adam_constant.py',
    './_base_/default_runtime.py',
]
steps = 40000
warmup = 1500
crop_size = (512, 512)
model = dict(
    # training batches padded to the crop; test images to a multiple of the patch size
    data_preprocessor=dict(size=crop_size, size_divisor=None, test_cfg=dict(size_divisor=16)),
    decode_head=dict(_delete_=True, type='BNLinearHead', in_channels=768, channels=768,
                     in_index=-1, dropout_ratio=0., num_classes=150, align_corners=False,
                     norm_cfg=dict(type='SyncBN', requires_grad=True),
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0, avg_non_ignore=False)),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label from ADE20KDataset
    dict(type='RandomResize', scale=(99999999, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: the label keeps its original size
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))  # x 8 GPUs = 16
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
# mmcv's poly policy with linear warm-up: the two factors multiply from iteration 0
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup),
    dict(type='PolyLR', power=1.0, eta_min=0., by_epoch=False, begin=0, end=steps),
]
train_cfg = dict(max_iters=steps, val_interval=steps)  # evaluate the final model
