# COCO-Stuff-27, OpenMMLab's standard protocol (as mmseg's coco-stuff164k.py): random rescale
# (0.5-2.0 of 2048x512) + 512x512 crop + flip + photometric distortion for training; keep-ratio
# resize to 2048x512 for testing with the prediction resized back to the ORIGINAL label
# resolution (no SegLabelResize). Numbers differ from the CoTAP protocol (coco-stuff27_cotap.py).
_base_ = ['./coco-stuff27_cotap.py']
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),  # images smaller than the crop: pad (label with 255)
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: the label keeps its original size
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# images of different sizes: one per GPU
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
