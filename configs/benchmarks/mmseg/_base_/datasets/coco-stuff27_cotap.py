# COCO-Stuff-27 (IIC/STEGO curated lists), CoTAP protocol (docs/method.md §6.1):
#   train: flip, RandomResizedCrop(scale 0.64-1, ratio 3/4-4/3) to ft_res=336, label to 448;
#   val:   image squashed to 448x448, label resized (nearest) to 448x448 = the evaluation shape.
# Standard-protocol alternative (labels at their original resolution): coco-stuff27_mmseg.py.
# Data: tools/dataset_converters/coco_stuff27.py (docs/data.md, "COCO-Stuff-27").
dataset_type = 'COCOStuff27Dataset'
data_root = 'data/cocostuff'
ft_res = 336  # training image side
target_res = 448  # label side, training and evaluation
val_res = 448  # evaluation image side
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SegRandomResizedCrop', size=ft_res, scale=(0.64, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='SegLabelResize', size=target_res),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(val_res, val_res), keep_ratio=False),  # squash
    dict(type='LoadAnnotations'),
    dict(type='SegLabelResize', size=target_res),  # also sets ori_shape: evaluate at 448x448
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=32,  # per GPU; 8 GPUs x 32 = CoTAP's ft_batchsize 256 (linear)
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations27/train2017'),
        ann_file='curated/train2017/Coco164kFull_Stuff_Coarse.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,  # per GPU; 8 x 2 = CoTAP's val batch 16 (all images are 448x448)
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations27/val2017'),
        ann_file='curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
