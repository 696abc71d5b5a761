"""Check the training data of a config before a long run: every image and every kNN file.

    python tools/check_data.py CONFIG [--min-size N] [--workers N] [--cfg-options KEY=VALUE ...]

Exits with 1 when anything is listed. Details: docs/data.md, "Producing the kNN files".
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', help='training config')
    p.add_argument('--min-size', type=int, default=None,
                   help="shorter side below which an image is listed (default: the config's "
                   'global crop side; 0: no check)')
    p.add_argument('--workers', type=int, default=os.cpu_count(),
                   help='decoding processes (default: the number of cores)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='config overrides, as in tools/train.py')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tools._common.args import tool_logger
    from mmengine.registry import init_default_scope

    from cotap_mm.datasets.data_check import check_folder, global_crop_side, training_folders
    from cotap_mm.models.utils.loading import load_config
    logger = tool_logger('check_data')
    if not osp.isfile(args.config):
        raise SystemExit(f'check_data: config {args.config!r} not found')
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    dataset_cfg = cfg.get('train_dataloader', {}).get('dataset')
    if dataset_cfg is None:
        raise SystemExit(f'check_data: {args.config} has no train_dataloader.dataset')
    min_size = global_crop_side(cfg) if args.min_size is None else args.min_size

    folders, errors = training_folders(dataset_cfg.to_dict())
    problems = []
    for folder in folders:
        problems += check_folder(folder, min_size, max(1, args.workers), logger)
    for path, problem in problems:
        print(f'{path}: {problem}')
    for error in errors:
        print(error)
    total = sum(len(f) for f in folders)
    print(f'check_data: {len(problems)} problem images of {total} in {len(folders)} folders, '
          f'{len(errors)} dataset errors' + ('' if problems or errors else ': all good'))
    return 1 if problems or errors else 0


if __name__ == '__main__':
    sys.exit(main())
