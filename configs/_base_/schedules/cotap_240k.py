# AdamW with CoTAP's parameter groups and schedules (docs/method.md §4.5), by iterations.
max_iters = 240000
optim_wrapper = dict(
    # tools/train.py switches to fp32 OptimWrapper when no GPU is present (AMP needs CUDA)
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.024),
    # mmengine's default grouping skips the norm/bias/1-D rules for parameters matched by
    # custom_keys (the heads' biases would be decayed); this constructor keeps them there too
    constructor='NoDecayOneDimOptimWrapperConstructor',
    paramwise_cfg=dict(
        # no decay on LayerNorms, biases and other 1-D parameters, heads included; pos_embed,
        # cls_token and the OAF kernel are decayed like the released code
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={
            'patch_head': dict(lr_mult=10.),  # heads at 3e-4
            'cls_head': dict(lr_mult=10.),
        }))
param_scheduler = [
    # cosine to 3e-6 for every group over max_iters + 5 steps, no warm-up
    dict(type='CosineAnnealingLR', T_max=max_iters + 5, eta_min=3e-6, by_epoch=False, begin=0,
         end=max_iters),
    # weight decay rises 0.024 -> 0.24 (x10) on a cosine; groups without decay stay at 0
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', T_max=max_iters + 5,
         eta_min_ratio=10., by_epoch=False, begin=0, end=max_iters),
]
# mmengine's IterBasedTrainLoop, but skipping trained batches on resume keeps the RNG streams
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=max_iters)
