# ADE20K (SceneParsing ADEChallengeData2016), 150 classes: label 0 -> 255 (ignore), the others
# minus 1 (ADE20KDataset's reduce_zero_label=True, applied by LoadAnnotations).
# CoTAP protocol (docs/method.md §6.1): train flip + RandomResizedCrop(0.64-1) to 336, label to
# 448; val image squashed to 448, label to 448 (the evaluation shape). Same sizes for linear and
# FCN. Standard protocol: ade20k_mmseg.py.
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
ft_res = 336
target_res = 448
val_res = 448
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label from the dataset
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SegRandomResizedCrop', size=ft_res, scale=(0.64, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='SegLabelResize', size=target_res),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(val_res, val_res), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='SegLabelResize', size=target_res),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=16,  # per GPU; 8 x 16 = CoTAP's ft_batchsize 128
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,  # per GPU; 8 x 4 = CoTAP's val batch 32
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
