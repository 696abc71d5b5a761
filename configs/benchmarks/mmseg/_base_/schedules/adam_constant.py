# Linear probe schedule (docs/method.md §6.1): Adam, lr 3e-3, constant (CoTAP's cosine has eta_min = lr).
# `max_iters` = num_finetune_sample // ft_batchsize; set by each top-level config.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=3e-3, betas=(0.9, 0.999), weight_decay=0.))
param_scheduler = []  # constant learning rate
# val_interval defaults to max_iters: the final model is evaluated once
train_cfg = dict(type='IterBasedTrainLoop', max_iters=390, val_interval=390)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
