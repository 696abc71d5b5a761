# NYU Depth v2 in mmseg's NYUDataset layout (ROOT/images/{train,test}/*.jpg, ROOT/annotations/
# {train,test}/*.png: uint16 millimetres), with the DINOv2 linear-probe protocol's sizes:
#   train: random flip, random 416 x 544 crop (the protocol also crops NYU's white border first
#          and jitters colour and rotation; not done here);
#   test:  the whole 480 x 640 image, depth in (0.001, 10) m inside the Eigen crop
#          (DepthMetric crop_type='nyu_crop').
# tools/make_synthetic_scenes.py OUT --num-depth-train N --num-depth-test M writes this layout.
dataset_type = 'NYUDataset'
data_root = 'data/nyu'
crop_size = (416, 544)
meta_keys = ('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'category_id')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/train', depth_map_path='annotations/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='DepthMetric', min_depth_eval=0.001, max_depth_eval=10.0,
                     crop_type='nyu_crop')
test_evaluator = val_evaluator
