# COCO train2017 + ImageNet-1k train, each image paired with one of its 7 nearest neighbours
# (docs/method.md §5). Layout and how to make the kNN files: docs/data.md.
data_root = 'data/'
nns_root = 'data/nns/'
view_pipeline = [
    dict(
        type='CoTAPMultiCrop',
        size_crops=(224, 96),
        nmb_crops=(2, 4),
        global_scale=(0.25, 1.0),
        local_scale=(0.05, 0.1)),
]
train_dataloader = dict(
    # x 8 GPUs = the released global batch of 112; the release ran 4 x 28, whose per-GPU lists,
    # queues and bank differ (configs/cotap_vit-s16_4xb28_coco.py, docs/training.md)
    batch_size=14,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    # DefaultSampler's order; each item carries a seed of its place in the run, so crops and
    # neighbour draws repeat on resume whatever num_workers is (docs/training.md)
    sampler=dict(type='ItemSeedSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='CoTAPDualDataset',
        coco=dict(
            type='KNNPairDataset',
            dataset=dict(type='ImageList', data_root=data_root + 'coco', data_prefix='train2017'),
            nns_file=nns_root + 'nns_vit_base_coco_train_None_224.npz',
            num_neighbors=7,
            nn_column_range='exclude_self'),  # released: 'with_self'
        imagenet=dict(
            type='KNNPairDataset',
            dataset=dict(type='ImageList', data_root=data_root + 'imagenet', data_prefix='train'),
            nns_file=nns_root + 'nns_vit_base_imagenet1k_train_None_224.npz',
            num_neighbors=7,
            nn_column_range='exclude_self'),
        view_pipeline=view_pipeline,
        pipeline=[dict(type='PackInputs', algorithm_keys=('bbox_gc', 'bbox_all'))]))
