# CoTAP model: DINO-layout ViT-S/16 with the object-aware filter, two projection heads, the CoTAP
# correspondence head and the Leopart-style losses (docs/method.md §1-§4). Switches of docs/method.md §8 are set to
# the corrected behaviour; the released one is noted beside each.
embed_dims = 384
model = dict(
    type='CoTAP',
    data_preprocessor=dict(
        type='CoTAPDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True,
        jitter_granularity='per_image'),  # released: 'per_slot_batch'
    backbone=dict(
        type='CoTAPVisionTransformer',
        arch='small',
        patch_size=16,
        img_size=224,
        drop_path_rate=0.,
        with_oaf=True,
        num_prototypes=64,
        # produced by tools/model_converters (DINO ViT-S/16 teacher weights, `backbone.` keys)
        init_cfg=dict(type='CoTAPPretrained', checkpoint='checkpoints/dino_vit-s16.pth',
                      prefix='backbone.')),
    patch_head=dict(type='CoTAPProjectionHead', in_channels=2 * embed_dims, num_prototypes=512),
    cls_head=dict(type='CoTAPProjectionHead', in_channels=2 * embed_dims, num_prototypes=4096),
    correspondence_head=dict(
        type='CorrespondenceHead',
        loss=dict(type='ContinuousAPLoss', tau=0.5, weight_threshold=-0.2, neg_weight=0.1),
        pool_sizes=(7, 14),
        topk=5,
        num_neg_draws=5,
        mask_alignment='aligned',  # released: 'as_coded'
        neg_sampler='derangement',  # released: 'super_perm'
        topk_tie_break='random',  # released: 'lowest_index'
        list_scope='local',  # 'global': one list over all GPUs
        similarity_dtype='float32'),  # released under AMP: 'float16' (fp16 cosines, more ties)
    # patch_size comes from the backbone (the crop boxes are divided by it)
    inner_patch_loss=dict(type='InnerPatchLoss', temperature=0.1, mask_alignment='aligned'),
    inner_cls_loss=dict(type='InnerCLSLoss', temperature=0.1),
    intra_cls_loss=dict(type='IntraCLSLoss', temperature=0.2),
    entropy_loss=dict(type='EntropyMaxLoss', temperature=0.1),
    loss_weights=dict(inner_patch=1., inner_cls=1., cotap=1., intra_cls=1., entropy=1.),
    num_crops=(2, 4),
    bank=dict(capacity=1024, num_insert=32),
    queue_sizes=(262144, 32768),  # global lengths, divided by the world size
    queue_inserts=(2048, 100),
    sinkhorn_temperatures=(0.05, 0.07),
    sinkhorn_iters=3,
    sinkhorn_scope='local',
    fg_mass=0.6,
    teacher_momentum=(0.9997, 0.9999),
    teacher_kernel_sync=False)  # True removes the teacher's random-prototype lag (docs/method.md §2.4b)
