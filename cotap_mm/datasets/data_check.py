"""The check of a training config's data before a long run (``tools/check_data.py``): the
image folders and kNN files of its training dataset, every image decoded as the pipeline does."""
import multiprocessing
import os.path as osp
import sys
import time
from typing import List, Tuple

from cotap_mm.registry import DATASETS
from .image_list import image_problem

__all__ = ['find_nodes', 'global_crop_side', 'training_folders', 'check_folder']


def find_nodes(cfg, types) -> List[dict]:
    """Config dicts whose ``type`` is one of ``types`` in ``cfg``, depth first."""
    found = []
    if isinstance(cfg, dict):
        if cfg.get('type') in types:
            found.append(cfg)
        for value in cfg.values():
            found += find_nodes(value, types)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            found += find_nodes(value, types)
    return found


def global_crop_side(cfg) -> int:
    """The global crop side of the config's ``CoTAPMultiCrop`` (0 without one)."""
    crops = find_nodes(cfg.get('train_dataloader', {}), ('CoTAPMultiCrop', ))
    return int(crops[0].get('size_crops', (224, ))[0]) if crops else 0


def training_folders(dataset_cfg: dict) -> Tuple[list, List[str]]:
    """The built ``ImageList`` of every folder of ``dataset_cfg`` and the errors of those that
    could not be built. A ``KNNPairDataset`` is built with its folder, which checks its kNN
    file against the image list; every failure names its file."""
    errors, folders = [], []
    for node in find_nodes(dataset_cfg, ('KNNPairDataset', )):
        try:
            folders.append(DATASETS.build(node).dataset)
        except Exception as e:
            errors.append(f'kNN file {node.get("nns_file")}: {type(e).__name__}: {e}')
    for node in find_nodes(dataset_cfg, ('ImageList', )):
        if not any(osp.join(node.get('data_root', ''), str(node.get('data_prefix', '')))
                   in (f.img_dir, f.img_dir.rstrip('/')) for f in folders):
            try:
                folders.append(DATASETS.build(node))
            except Exception as e:
                errors.append(f'image folder: {type(e).__name__}: {e}')
    return folders, errors


def _check(job):
    path, min_size = job
    return path, image_problem(path, min_size)


def check_folder(dataset, min_size: int, workers: int, logger) -> List[Tuple[str, str]]:
    """[(path, problem)] of one ``ImageList``, decoded by ``workers`` processes, with a progress
    bar and a summary line."""
    from mmengine.utils import ProgressBar
    jobs = [(dataset.get_img_path(i), min_size) for i in range(len(dataset))]
    problems, bar = [], ProgressBar(len(jobs))
    start = time.perf_counter()
    if workers > 1:
        pool = multiprocessing.get_context('fork').Pool(workers)
        results = pool.imap(_check, jobs, chunksize=32)
    else:
        pool, results = None, map(_check, jobs)
    for path, problem in results:
        if problem:
            problems.append((path, problem))
        bar.update()
    if pool is not None:
        pool.close()
        pool.join()
    seconds = time.perf_counter() - start
    sys.stdout.write('\n')
    logger.info(f'{dataset.img_dir}: {len(jobs)} images, {len(problems)} with problems '
                f'({seconds:.1f} s, {1000 * seconds / max(len(jobs), 1):.1f} s per 1,000 images, '
                f'{workers} processes)')
    return problems
