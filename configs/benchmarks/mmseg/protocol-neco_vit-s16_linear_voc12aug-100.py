# Protocol "NeCo linear" (docs/probes.md, "Evaluation protocols by name"): the linear probe of
# NeCo's experiments/linear_segmentation/linear_finetune.py (Leopart's protocol) on a CoTAP
# ViT-S/16, Pascal VOC 2012 trainaug / val (21 classes).
#   train: RandomResizedCrop(448, scale 0.8-1), flip; label resized (nearest) to 100 x 100 and
#          the logits upsampled bilinearly to it; batch 128 on one GPU, last partial batch
#          dropped; SGD lr 0.01, momentum 0.9, weight decay 1e-4, 20 epochs (its StepLR drops
#          the lr after epoch 20, i.e. never); CrossEntropyLoss over the labelled pixels
#   val:   image squashed to 448 x 448, label resized (nearest) to 448 x 448 then to 100 x 100:
#          mIoU on 100 x 100 masks.
# Differs from NeCo (table in docs/probes.md): the 2D-wide CoTAP feature, OpenCV resizes, and
# the final model is evaluated (NeCo validates every epoch and keeps the best 3 heads).
_base_ = [
    './_base_/models/cotap_vit-s16_linear.py',
    './_base_/datasets/voc12aug_cotap-448.py',
    './_base_/default_runtime.py',
]
epochs = 20
input_res = 448  # NeCo's size_crops
mask_res = 100  # NeCo's train_mask_size = val_mask_size
model = dict(decode_head=dict(num_classes=21))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='SegRandomResizedCrop', size=input_res, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='SegLabelResize', size=mask_res),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_res, input_res), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='SegLabelResize', size=input_res),  # NeCo resizes the val mask to 448 first
    dict(type='SegLabelResize', size=mask_res),  # sets ori_shape: evaluate at 100 x 100
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=128,  # NeCo: one GPU
    drop_last=True,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(datasets=[
        dict(type='PascalVOCDataset', data_root='data/VOCdevkit/VOC2012',
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
             ann_file='ImageSets/Segmentation/train.txt', pipeline=train_pipeline),
        dict(type='PascalVOCDataset', data_root='data/VOCdevkit/VOC2012',
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
             ann_file='ImageSets/Segmentation/aug.txt', pipeline=train_pipeline),
    ]))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = []  # constant
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(by_epoch=True, interval=1))
randomness = dict(seed=400)  # NeCo's seed
