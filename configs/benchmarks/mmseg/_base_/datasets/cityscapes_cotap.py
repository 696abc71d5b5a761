# Cityscapes fine, 19 train ids (255 = void), labels *_gtFine_labelTrainIds.png from mmseg's
# converter (`mim run mmseg cityscapes data/cityscapes --nproc 8`, needs cityscapesscripts).
# CoTAP protocol (docs/method.md §6.1, target_res = -1): train flip + RandomResizedCrop
# (0.36-1, ratio 3/4-4/3) of image and label to 896x896, no further label resize; val image
# squashed to 1024x1024, the prediction resized back to the ORIGINAL 1024x2048 label.
# Standard protocol: cityscapes_mmseg.py.
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes'
ft_res = 896
val_res = 1024
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SegRandomResizedCrop', size=ft_res, scale=(0.36, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(val_res, val_res), keep_ratio=False),
    dict(type='LoadAnnotations'),  # original size: ori_shape is the evaluation shape
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,  # per GPU; 8 x 8 = CoTAP's ft_batchsize 64
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,  # CoTAP's val batch is 4 in total
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
