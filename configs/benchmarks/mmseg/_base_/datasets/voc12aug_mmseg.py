# VOC 2012 aug, OpenMMLab's standard protocol (mmseg's pascal_voc12_aug.py): random rescale
# (0.5-2.0 of 2048x512), 512x512 crop, flip, photometric distortion; test: keep-ratio resize to
# 2048x512, evaluation at the ORIGINAL label resolution. Data as voc12aug_cotap-448.py.
_base_ = ['./voc12aug_cotap-448.py']
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    dataset=dict(datasets=[
        dict(
            type='PascalVOCDataset',
            data_root='data/VOCdevkit/VOC2012',
            data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
            ann_file='ImageSets/Segmentation/train.txt',
            pipeline=train_pipeline),
        dict(
            type='PascalVOCDataset',
            data_root='data/VOCdevkit/VOC2012',
            data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
            ann_file='ImageSets/Segmentation/aug.txt',
            pipeline=train_pipeline),
    ]))
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
