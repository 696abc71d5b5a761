"""What the demo runs: its configs, presets (sizes and schedules) and work-dir rules
(docs/demo.md). Paths are relative to the repository checkout that runs the demo."""
import os
import os.path as osp

__all__ = ['CONFIGS', 'INITS', 'DEMO_ARCH', 'PRESETS', 'INIT_PRESET_KEYS', 'NUM_CLASSES',
           'DENSE_OFF',
           'MARKER', 'prepare_work_dir', 'config_text']

CONFIGS = dict(
    supervised='configs/demo/init-supervised_vit-tiny_synthetic.py',
    selfdistill='configs/demo/init_vit-tiny_synthetic.py',
    cotap='configs/demo/cotap_vit-tiny_synthetic.py',
    probe='configs/demo/linear-probe_synthetic.py',
    probe_pixels='configs/demo/linear-probe-pixels_synthetic.py')
INITS = ('supervised', 'random', 'selfdistill')

# the demo ViT of configs/demo: 96-d, 3 heads (not inferable from tensor shapes)
DEMO_ARCH = dict(num_heads=3, embed_dims=96)
# dataset sizes and schedule lengths; 'mini' is the test-suite miniature of the same chain,
# 'gpu' the GPU-scale experiment (configs/demo/gpu/: a 6-layer ViT-S/8 on 160-px scenes).
# init_iters / init_batch_size: the supervised init's steps and images per step;
# selfdistill_iters: the self-distilled init's steps (of batch_size items, as the CoTAP stage);
# cotap_iters: the steps of the demo's control and CoTAP stages ('default': 100, fewer than the
# protocol's 1,000, so that a cached run stays near its time goal; docs/demo.md).
PRESETS = dict(
    default=dict(size=96, num_coco=1000, num_imagenet=1000, num_seg_train=300, num_seg_val=100,
                 num_seg_test=200,
                 init_iters=4000, init_batch_size=64, selfdistill_iters=300, cotap_iters=100,
                 probe_iters=300, lbfgs_iters=200, batch_size=16, knn_k=8, num_pictures=4),
    mini=dict(size=64, num_coco=24, num_imagenet=24, num_seg_train=12, num_seg_val=6,
              num_seg_test=6,
              init_iters=3, init_batch_size=8, selfdistill_iters=3, cotap_iters=3,
              probe_iters=4, lbfgs_iters=5, batch_size=4, knn_k=8, num_pictures=2),
    gpu=dict(size=160, num_coco=4000, num_imagenet=4000, num_seg_train=1000, num_seg_val=300,
             num_seg_test=600,
             init_iters=2000, init_batch_size=256, selfdistill_iters=1000, cotap_iters=1000,
             probe_iters=1000, lbfgs_iters=300, batch_size=32, knn_k=8, num_pictures=4,
             device='cuda', knn_image_size=128, num_heads=6, embed_dims=384,
             configs=dict(supervised='configs/demo/gpu/init-supervised_vit-s8_synthetic.py',
                          cotap='configs/demo/gpu/cotap_vit-s8_synthetic.py',
                          probe='configs/demo/gpu/linear-probe_vit-s8_synthetic.py',
                          probe_pixels='configs/demo/gpu/linear-probe-pixels_synthetic-160.py')),
)
# the preset entries each trained init depends on (the key of its cache)
INIT_PRESET_KEYS = dict(
    supervised=('size', 'num_imagenet', 'init_iters', 'init_batch_size'),
    selfdistill=('size', 'num_coco', 'num_imagenet', 'selfdistill_iters', 'batch_size', 'knn_k'))
# the data-matched control (docs/protocol.md, row b'): the CoTAP configuration with its dense
# terms off, only the two CLS code losses training
DENSE_OFF = ('model.loss_weights.cotap=0.', 'model.loss_weights.inner_patch=0.',
             'model.loss_weights.entropy=0.')
NUM_CLASSES = 12  # cotap_mm.datasets.synthetic.CLASSES

MARKER = '.cotap_demo'  # marks a work dir the demo created, so that a rerun may replace it


def prepare_work_dir(work_dir):
    """Start afresh: replace an earlier demo's work dir, refuse any other non-empty folder."""
    if osp.isdir(work_dir) and os.listdir(work_dir):
        if not osp.isfile(osp.join(work_dir, MARKER)):
            raise SystemExit(f'demo: --work-dir {work_dir} is not empty and was not written by '
                             'tools/demo.py; choose another folder or empty it')
        import shutil
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    open(osp.join(work_dir, MARKER), 'w').close()


def config_text(path):
    """The text of a config file followed by that of its ``_base_`` files, recursively."""
    from mmengine.config import Config
    with open(path) as f:
        parts = [f.read()]
    for base in Config._get_base_files(path):
        parts.append(config_text(osp.join(osp.dirname(path), base)))
    return '\n'.join(parts)
