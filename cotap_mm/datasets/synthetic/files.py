"""Writing the synthetic scenes to disk in the COCO / ImageNet / mmseg layouts, and previews."""
import json
import os
import os.path as osp
import shutil
from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from cotap_mm.utils.fileio import atomic_write_bytes
from .depth import scene_depth
from .scenes import (CLASSES, GENERATOR_VERSION, IGNORE_INDEX, JPEG_QUALITY, NUM_THINGS, PALETTE,
                     STUFF_CLASSES, THING_CLASSES, check_colour_mode, generate_scene)

__all__ = ['write_synthetic_dataset', 'render_preview', 'colorize_label',
           'pretraining_scene_classes']


def colorize_label(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 label -> (H, W, 3) uint8 RGB with :data:`PALETTE` (ignore = black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(PALETTE)] = np.array(PALETTE, dtype=np.uint8)
    return lut[label]


def render_preview(seed: int = 0, size: int = 96, num: int = 3, scale: int = 2,
                   colour_mode: str = 'per_instance') -> np.ndarray:
    """A (num*size*scale, 2*size*scale, 3) uint8 RGB grid: scene | coloured label per row.

    Uses the ``'preview'`` stream of ``seed`` (independent of the dataset splits)."""
    rows = []
    for i in range(num):
        img, label, _ = generate_scene(_rng(seed, 'preview', i), size, colour_mode=colour_mode)
        row = np.concatenate([img, colorize_label(label)], axis=1)
        rows.append(cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    return np.concatenate(rows, axis=0)


def write_preview(path: str, seed: int = 0, size: int = 96, num: int = 3,
                  colour_mode: str = 'per_instance') -> None:
    """Write :func:`render_preview` (doubled up to 96 px scenes) to the PNG ``path``, atomically
    and at the maximum zlib level: the picture is committed to the repository."""
    if not path.lower().endswith('.png'):
        raise ValueError(f'--preview {path!r}: the preview is written as PNG; use a .png name')
    grid = render_preview(seed=seed, size=size, num=num, scale=2 if size <= 96 else 1,
                          colour_mode=colour_mode)
    ok, png = cv2.imencode('.png', cv2.cvtColor(grid, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise OSError(f'cv2 could not encode the preview {path!r}')
    atomic_write_bytes(png.tobytes(), path)

# --- writer ------------------------------------------------------------------------------------

# One independent random stream per (seed, split, image index): the code of a split must never
# change, or the files change.
_SPLIT_CODES = dict(coco=1, imagenet=2, seg_train=3, seg_val=4, preview=5, depth_train=6,
                    depth_test=7, seg_test=8)
DEPTH_SCALE = 1000  # depth PNGs hold millimetres (uint16), as NYU Depth v2


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODES[split],
                                                         int(index)]))


def _write_image(path: str, img_rgb: np.ndarray) -> None:
    ok = cv2.imwrite(path, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f'write_synthetic_dataset: cv2 could not write {path!r}')


def _write_png(path: str, arr: np.ndarray) -> None:
    if not cv2.imwrite(path, arr):
        raise OSError(f'write_synthetic_dataset: cv2 could not write {path!r}')


def _write_json(path: str, obj) -> None:
    with open(path, 'w') as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write('\n')


def _is_ours(out_dir: str) -> bool:
    """True if ``out_dir/meta.json`` says this generator wrote the folder."""
    try:
        with open(osp.join(out_dir, 'meta.json')) as f:
            return str(json.load(f).get('generator', '')).startswith('cotap_mm.synthetic/')
    except (OSError, ValueError, AttributeError):
        return False


def write_synthetic_dataset(out_dir: str,
                            seed: int = 0,
                            size: int = 96,
                            num_coco: int = 1000,
                            num_imagenet: int = 1000,
                            num_seg_train: int = 200,
                            num_seg_val: int = 100,
                            num_seg_test: int = 0,
                            force: bool = False,
                            progress: Optional[Callable[[], None]] = None,
                            colour_mode: str = 'per_instance',
                            num_depth_train: int = 0,
                            num_depth_test: int = 0) -> Dict:
    """Write the COCO-, ImageNet- and mmseg-style folders of synthetic scenes under ``out_dir``.

    Layout (see ``docs/synthetic.md``)::

        out_dir/coco/train2017/{i:012d}.jpg                  # 'scene' mode, i = 0..num_coco-1
        out_dir/imagenet/train/<dominant class>/<class>_{i:06d}.jpg   # 'object_centric' mode
        out_dir/seg/img_dir/{train,val,test}/{split}_{i:06d}.jpg  # 'scene' mode
        out_dir/seg/ann_dir/{train,val,test}/{split}_{i:06d}.png  # uint8 labels 0..11 (255 = ignore)
        out_dir/seg/classes.json                             # classes, palette, ignore_index
        out_dir/nyu/images/{train,test}/depth_{split}_{i:06d}.jpg     # 'scene' mode, with depth
        out_dir/nyu/annotations/{train,test}/depth_{split}_{i:06d}.png # uint16 millimetres
        out_dir/meta.json                  # seed, counts, size, colour mode, classes, version

    Everything is first written to ``out_dir + '.tmp'`` and then renamed to ``out_dir``, so an
    interrupted run never leaves a half-written ``out_dir``. The ImageNet object-centric scenes
    cycle their main class (``i % 8``), so the class folders are balanced; an image goes to the
    folder of its *dominant* (largest visible) thing class, nearly always the main one.

    Args:
        out_dir (str): Output folder. Must not exist or be empty, unless ``force``.
        seed (int): Base seed; image ``i`` of split ``s`` uses the stream ``(seed, s, i)``.
        size (int): Image side in pixels.
        num_coco, num_imagenet, num_seg_train, num_seg_val (int): Image counts (>= 0).
        num_seg_test (int): Labelled scenes of the held-out test split (``seg/*/test``, its
            own stream; only when > 0): development choices are made on val, tables report
            test. Default 0.
        force (bool): Replace an existing non-empty ``out_dir``, but only one that this
            function wrote (its ``meta.json`` says so); any other folder is never deleted.
        progress (callable, optional): Called once per written image (e.g. a progress bar's
            ``update``).
        colour_mode (str): ``'per_instance'`` (default) or ``'per_class'``; see
            :func:`generate_scene`. Written to ``meta.json``.
        num_depth_train, num_depth_test (int): Scenes with their depth maps
            (:func:`scene_depth`) in the NYU Depth v2 layout of mmseg's ``NYUDataset``
            (``nyu/``, only when > 0). Default 0.

    Returns:
        dict: The content of ``meta.json``.
    """
    counts = dict(num_coco=num_coco, num_imagenet=num_imagenet, num_seg_train=num_seg_train,
                  num_seg_val=num_seg_val, num_seg_test=num_seg_test, num_depth_train=num_depth_train,
                  num_depth_test=num_depth_test)
    for k, n in counts.items():
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f'write_synthetic_dataset: {k}={n!r}; it must be an int >= 0')
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f'write_synthetic_dataset: size={size!r}; it must be an int >= 16')
    check_colour_mode('write_synthetic_dataset', colour_mode)
    out_dir = osp.abspath(out_dir.rstrip('/\\') or out_dir)
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise FileExistsError(f'write_synthetic_dataset: {out_dir!r} exists and is not a folder')
    non_empty = osp.isdir(out_dir) and bool(os.listdir(out_dir))
    if non_empty and not force:
        raise FileExistsError(f'write_synthetic_dataset: output folder {out_dir!r} is not empty; '
                              'pass force=True (--force) to replace it, or pick another folder.')
    if non_empty and not _is_ours(out_dir):
        raise FileExistsError(
            f'write_synthetic_dataset: refusing to replace {out_dir!r}: it has no meta.json '
            'written by this generator, so it may hold other data. Delete it yourself or pick '
            'another folder.')

    tmp = out_dir + '.tmp'
    if osp.exists(tmp):  # left over by an interrupted run; only ever written by us
        shutil.rmtree(tmp)
    dirs = dict(coco=osp.join(tmp, 'coco', 'train2017'),
                imagenet=osp.join(tmp, 'imagenet', 'train'),
                **{split: (osp.join(tmp, 'seg', 'img_dir', split[4:]),
                           osp.join(tmp, 'seg', 'ann_dir', split[4:]))
                   for split in ('seg_train', 'seg_val', 'seg_test')})
    for d in (dirs['coco'], dirs['imagenet'], *dirs['seg_train'], *dirs['seg_val']):
        os.makedirs(d)
    if num_seg_test:
        for d in dirs['seg_test']:
            os.makedirs(d)

    def tick():
        if progress is not None:
            progress()

    try:
        pixel_counts = np.zeros(len(CLASSES), dtype=np.int64)
        for i in range(num_coco):
            img, _, _ = generate_scene(_rng(seed, 'coco', i), size, 'scene',
                                       colour_mode=colour_mode)
            _write_image(osp.join(dirs['coco'], f'{i:012d}.jpg'), img)
            tick()
        per_class = {c: 0 for c in THING_CLASSES}
        for i in range(num_imagenet):
            img, _, info = generate_scene(_rng(seed, 'imagenet', i), size, 'object_centric',
                                          main_class=i % NUM_THINGS, colour_mode=colour_mode)
            name = info['dominant_name']
            os.makedirs(osp.join(dirs['imagenet'], name), exist_ok=True)
            _write_image(osp.join(dirs['imagenet'], name, f'{name}_{i:06d}.jpg'), img)
            per_class[name] += 1
            tick()
        for split, n in (('seg_train', num_seg_train), ('seg_val', num_seg_val),
                         ('seg_test', num_seg_test)):
            img_dir, ann_dir = dirs[split]
            for i in range(n):
                img, label, _ = generate_scene(_rng(seed, split, i), size, 'scene',
                                               colour_mode=colour_mode)
                stem = f'{split}_{i:06d}'
                _write_image(osp.join(img_dir, stem + '.jpg'), img)
                _write_png(osp.join(ann_dir, stem + '.png'), label)
                if split != 'seg_test':  # the fractions describe train + val, as before
                    pixel_counts += np.bincount(label.ravel(), minlength=len(CLASSES))
                tick()
        for split, n in (('depth_train', num_depth_train), ('depth_test', num_depth_test)):
            sub = split.split('_')[1]
            for i in range(n):
                img, _, info = generate_scene(_rng(seed, split, i), size, 'scene',
                                              colour_mode=colour_mode)
                stem = f'{split}_{i:06d}'
                depth_mm = np.rint(scene_depth(info, size) * DEPTH_SCALE).astype(np.uint16)
                for kind, arr, ext in (('images', img, '.jpg'), ('annotations', depth_mm, '.png')):
                    os.makedirs(osp.join(tmp, 'nyu', kind, sub), exist_ok=True)
                    (_write_image if ext == '.jpg' else _write_png)(
                        osp.join(tmp, 'nyu', kind, sub, stem + ext), arr)
                tick()
        classes_json = dict(classes=list(CLASSES), palette=PALETTE, ignore_index=IGNORE_INDEX,
                            thing_classes=list(THING_CLASSES), stuff_classes=list(STUFF_CLASSES))
        _write_json(osp.join(tmp, 'seg', 'classes.json'), classes_json)
        meta = dict(
            generator=GENERATOR_VERSION,
            seed=int(seed),
            size=int(size),
            colour_mode=colour_mode,
            counts=dict(coco=num_coco, imagenet=num_imagenet, seg_train=num_seg_train,
                        seg_val=num_seg_val,
                        **{k: n for k, n in (('seg_test', num_seg_test),
                                             ('depth_train', num_depth_train),
                                             ('depth_test', num_depth_test)) if n}),
            imagenet_per_class={k: v for k, v in per_class.items() if v},
            seg_pixel_fraction={c: round(float(p) / max(1, pixel_counts.sum()), 5)
                                for c, p in zip(CLASSES, pixel_counts)},
            classes=list(CLASSES),
            thing_classes=list(THING_CLASSES),
            stuff_classes=list(STUFF_CLASSES),
            palette=PALETTE,
            ignore_index=IGNORE_INDEX,
            jpeg_quality=JPEG_QUALITY,
            streams={k: v for k, v in _SPLIT_CODES.items() if k != 'preview' and not (
                k.startswith('depth') and not (num_depth_train or num_depth_test)) and not (
                k == 'seg_test' and not num_seg_test)},
        )
        _write_json(osp.join(tmp, 'meta.json'), meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # Swap in: the old folder (empty, or ours with force) goes only after the new one is complete.
    if osp.isdir(out_dir):
        old = out_dir + '.old'
        if osp.exists(old):
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old)
    else:
        os.makedirs(osp.dirname(out_dir), exist_ok=True)
        os.replace(tmp, out_dir)
    return meta


def pretraining_scene_classes(out_dir: str, subset: str) -> Dict[str, Tuple[int, ...]]:
    """The classes visible in each pretraining scene of a folder written by
    :func:`write_synthetic_dataset` (``subset`` ``'coco'`` or ``'imagenet'``), regenerated from
    its ``meta.json`` (the labels of these scenes are not written): image path relative to the
    subset's image folder -> sorted class ids (things with visible pixels, and stuff)."""
    with open(osp.join(out_dir, 'meta.json')) as f:
        meta = json.load(f)
    if subset not in ('coco', 'imagenet'):
        raise ValueError(f'pretraining_scene_classes: subset={subset!r}; use coco or imagenet')
    seed, size, mode = meta['seed'], meta['size'], meta.get('colour_mode', 'per_class')
    out = {}
    for i in range(meta['counts'][subset]):
        if subset == 'coco':
            _, _, info = generate_scene(_rng(seed, 'coco', i), size, 'scene', colour_mode=mode)
            rel = f'{i:012d}.jpg'
        else:
            _, _, info = generate_scene(_rng(seed, 'imagenet', i), size, 'object_centric',
                                        main_class=i % NUM_THINGS, colour_mode=mode)
            rel = osp.join(info['dominant_name'], f"{info['dominant_name']}_{i:06d}.jpg")
        things = {o['cls'] for o in info['objects'] if o['visible_px'] > 0}
        out[rel] = tuple(sorted(things | set(info['stuff'])))
    return out
