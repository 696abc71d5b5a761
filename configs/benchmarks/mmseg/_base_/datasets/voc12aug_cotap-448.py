# Pascal VOC 2012 + SBD "trainaug" (10,582 images) / val (1,449), 21 classes, 255 ignore.
# CoTAP protocol (docs/method.md §6.1), linear-probe sizes: train flip + RandomResizedCrop
# (0.64-1) to 336, label to 448; val image squashed to 448, label to 448 (evaluation shape).
# FCN sizes (336 -> 336): voc12aug_cotap-336.py. Standard protocol: voc12aug_mmseg.py.
# Layout (mmseg's): data/VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, SegmentationClassAug,
# ImageSets/Segmentation/{train,val,aug}.txt}; SegmentationClassAug and aug.txt come from mmseg's
# converter: `mim run mmseg voc_aug data/VOCdevkit data/VOCdevkit/VOCaug --nproc 8`.
dataset_type = 'PascalVOCDataset'
data_root = 'data/VOCdevkit/VOC2012'
ft_res = 336
target_res = 448
val_res = 448
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
    dict(type='Resize', scale=(val_res, val_res), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='SegLabelResize', size=target_res),
    dict(type='PackSegInputs'),
]
# trainaug = VOC train (SegmentationClass) + SBD extra images (SegmentationClassAug, aug.txt)
dataset_train = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
    ann_file='ImageSets/Segmentation/train.txt',
    pipeline=train_pipeline)
dataset_aug = dict(
    type=dataset_type,
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
    ann_file='ImageSets/Segmentation/aug.txt',
    pipeline=train_pipeline)
train_dataloader = dict(
    batch_size=16,  # per GPU; 8 x 16 = CoTAP's ft_batchsize 128
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ConcatDataset', datasets=[dataset_train, dataset_aug]))
val_dataloader = dict(
    batch_size=4,  # per GPU; 8 x 4 = CoTAP's val batch 32
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
