# VOC 2012 aug, CoTAP protocol with the FCN sizes of docs/method.md §6.1: train crop 336, label 336; val
# image 336, label 336 (the evaluation shape). Everything else as voc12aug_cotap-448.py.
_base_ = ['./voc12aug_cotap-448.py']
ft_res = 336
target_res = 336
val_res = 336
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
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
