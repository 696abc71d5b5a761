# FCN schedule (docs/method.md §6.1): Adam, lr 3e-3, cosine to 1e-4 over T_max = steps + 5 iterations
# (as CoTAP's CosineAnnealingLR(T_max=steps + 5), stepped once per iteration, so the last lr is
# slightly above eta_min). Top-level configs set max_iters, T_max and end together.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=3e-3, betas=(0.9, 0.999), weight_decay=0.))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=3125 + 5, eta_min=1e-4, by_epoch=False, begin=0,
         end=3125)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=3125, val_interval=3125)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
