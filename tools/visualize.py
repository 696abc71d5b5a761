"""Pictures of a CoTAP backbone: PCA of patch features, OAF prototype assignments, foreground mask.

    python tools/visualize.py CONFIG CHECKPOINT IMAGE_OR_DIR [...] --out-dir DIR \
        [--size 448] [--which student|teacher] [--cfg-options KEY=VALUE ...]

Writes ``<stem>_{pca,prototypes,foreground}.png`` per image and the contact sheet
``summary.png``; what each picture shows, the accepted configs and checkpoints (loaded
strictly): docs/visualize.md.
"""
import argparse
import os.path as osp
import sys
from typing import List

# Make the repository root importable when run from a source checkout without `pip install -e`.
_REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction

    from tools._common.args import float_in, positive_int
    p = argparse.ArgumentParser(
        description='Visualise a CoTAP backbone: PCA of patch features, OAF prototype '
        'assignments and the CLS-attention foreground mask.')
    p.add_argument('config', help='config whose model is (or has as model.backbone) a '
                   'CoTAPVisionTransformer')
    p.add_argument('checkpoint', help='CoTAP pretraining checkpoint or backbone-only file '
                   '(backbone.* keys)')
    p.add_argument('images', nargs='+', help='image files and/or folders of images')
    p.add_argument('--out-dir', required=True, help='folder for the PNGs')
    p.add_argument('--size', type=positive_int, default=448,
                   help='images are resized to SIZE x SIZE (a multiple of the patch size)')
    p.add_argument('--which', choices=('student', 'teacher'), default='student',
                   help='for a CoTAP pretraining checkpoint: the student (backbone.*) or the EMA '
                   'teacher (teacher.module.backbone.*)')
    p.add_argument('--unsafe-pickle', action='store_true',
                   help='load a CHECKPOINT that pickles Python objects (weights_only=False): it '
                   'can run code stored in the file; only for files you trust')
    p.add_argument('--pca-interp', choices=('nearest', 'bilinear'), default='nearest',
                   help='upsampling of the PCA colours to the image (prototype ids and the mask '
                   'are always nearest)')
    p.add_argument('--fg-mass', type=float_in(0, 1, low_open=True), default=None,
                   help='attention mass kept by the foreground mask; defaults to the config\'s '
                   'model.fg_mass, else 0.6 (docs/method.md §4.4)')
    p.add_argument('--alpha', type=float_in(0, 1), default=0.5,
                   help='opacity of the prototype colours over the image')
    p.add_argument('--tile-size', type=positive_int, default=224, help='tile side in summary.png')
    p.add_argument('--batch-size', type=positive_int, default=4, help='images per forward pass')
    p.add_argument('--device', default=None, help='torch device (default: cuda if available)')
    p.add_argument('--save-arrays', action='store_true',
                   help='also write <stem>_maps.npz with the patch-level maps')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config settings, e.g. model.backbone.num_prototypes=32')
    args = p.parse_args(argv)
    if not osp.isfile(args.config):
        p.error(f'config file not found: {args.config}')
    if not osp.isfile(args.checkpoint):
        p.error(f'checkpoint file not found: {args.checkpoint}')
    from cotap_mm.utils.images import collect_images
    try:
        args.image_paths = collect_images(args.images)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    return args


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    import cotap_mm  # noqa: F401  (registers the backbone, applies torch compat patches)
    from tools._common.args import tool_logger
    from mmengine.utils import ProgressBar

    from cotap_mm.evaluation.backbone_maps import build_raw_backbone, maps_of_images
    from cotap_mm.models.utils.loading import load_backbone_weights, load_config
    from cotap_mm.visualization import fit_pca, label_palette, write_backbone_pictures

    logger = tool_logger('cotap_visualize')
    cfg = load_config(args.config, args.cfg_options)
    backbone = build_raw_backbone(cfg)
    p = backbone.patch_size
    if args.size % p:
        raise SystemExit(f'visualize: --size {args.size} is not a multiple of the patch size '
                         f'{p}; use e.g. {max(p, args.size // p * p)}')
    load_backbone_weights(backbone, args.checkpoint, which=args.which,
                          unsafe_pickle=args.unsafe_pickle, logger=logger)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    backbone.to(device).eval()
    fg_mass = args.fg_mass
    if fg_mass is None:
        fg_mass = float(cfg.model.get('fg_mass', 0.6))  # a CoTAP algorithm config has one
    M = backbone.oaf.num_prototypes
    if M > 64:
        logger.warning(f'{M} prototypes but the fixed palette has 64 well-separated colours; '
                       'ids above 63 reuse the palette sequence and may look alike')
    palette = label_palette(max(64, M))
    paths = args.image_paths
    logger.info(f'{len(paths)} images at {args.size}x{args.size} (grid {args.size // p}x'
                f'{args.size // p}), {M} prototypes, foreground mass {fg_mass}, device {device}')

    # pass 1: forward every image; keep the patch-level maps (the PCA needs all of them)
    images, maps = maps_of_images(backbone, paths, args.size, fg_mass, args.batch_size, device)
    pca = fit_pca([m['features'] for m in maps], num_components=3)
    ev = pca['explained_variance']
    logger.info('PCA fitted jointly on all images; variance of components 1-3: ' +
                ', '.join(f'{v:.3g}' for v in ev))

    # pass 2: render and write
    bar = ProgressBar(len(paths))
    written = write_backbone_pictures(args.out_dir, paths, images, maps, pca, palette,
                                      args.pca_interp, args.alpha, args.tile_size,
                                      args.save_arrays, bar.update)
    sys.stdout.write('\n')
    logger.info(f'Wrote {len(written)} files to {args.out_dir}: {len(paths)} images x '
                f'(pca, prototypes, foreground{", maps.npz" if args.save_arrays else ""}) + '
                f'summary.png ({args.which} weights of {osp.basename(args.checkpoint)})')
    return written


if __name__ == '__main__':
    main()
