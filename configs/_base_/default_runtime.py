default_scope = 'mmpretrain'
custom_imports = dict(imports=['cotap_mm'], allow_failed_imports=False)

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=200),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # CheckpointHook with atomic writes (temp file + fsync + rename, then `last_checkpoint`):
    # a run killed while saving resumes from the last complete checkpoint
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=10000,
                    max_keep_ckpts=5),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
# the EMA teacher follows the student after every optimiser step (docs/method.md §4.2, step 12)
# RankStateHook stores every rank's random generators, queues and bank in checkpoints, so --resume
# continues each rank's own draws and state
# DenseProbeHook: a quick linear segmentation probe of the student every 1,600 iterations, as the
# released runs; off while `dataset` is None. Give it a small labelled mmseg dataset, e.g.
#   dict(type='DenseProbeHook', interval=1600, num_images=100, dataset=dict(type=..., ...))
# and monitor it with default_hooks.checkpoint.save_best='probe/mIoU', rule='greater'.
custom_hooks = [
    dict(type='TeacherEMAHook'),
    dict(type='RankStateHook'),
    dict(type='DenseProbeHook', interval=1600, dataset=None),
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py uses gloo when there is no GPU
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=50)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
