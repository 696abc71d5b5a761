# Protocol "DINOv2 linear" (docs/probes.md, "Evaluation protocols by name") on Pascal VOC 2012
# (21 classes): the schedule, head and sizes of protocol-dinov2_vit-s16_linear_ade20k-512.py with
# the released VOC config's data: training on VOC 2012 `train` (1,464 images, SegmentationClass,
# not trainaug), mmseg's 2048 x 512 random rescale (0.5-2.0), evaluation on `val` at the original
# label resolution.
_base_ = [
    './protocol-dinov2_vit-s16_linear_ade20k-512.py',
]
crop_size = (512, 512)
model = dict(decode_head=dict(num_classes=21))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = {{_base_.test_pipeline}}  # ADE20K's: keep-ratio 2048 x 512, original labels
voc_root = 'data/VOCdevkit/VOC2012'
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=voc_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/train.txt',
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PascalVOCDataset',
        data_root=voc_root,
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))
test_dataloader = val_dataloader
