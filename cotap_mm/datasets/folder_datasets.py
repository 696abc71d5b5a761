"""Folder datasets of the offline probes (``tools/analysis/``): an ImageNet-style class folder
with the classification evaluation transform, and an mmseg-layout segmentation split with the
segmentation validation resize (docs/probes.md). Plain ``torch`` datasets: the probes extract
features once, outside any Runner."""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from cotap_mm.utils.images import (IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS,
                                   list_folder_images, load_center_crop, load_squashed,
                                   read_rgb, to_normalized_tensor)
from cotap_mm.utils.rng import derive_seed

__all__ = ['load_label_map', 'annotation_path', 'find_annotations', 'ImageFolderDataset',
           'SegFolderDataset', 'AugmentedSegFolderDataset']
SEG_SUFFIX = '.png'  # label maps: <stem>.png, as mmseg's seg_map_suffix


def _open_label(path: str) -> Image.Image:
    a = Image.open(path)
    if a.mode not in ('L', 'P', 'I', 'I;16'):
        a.close()
        raise ValueError(f'annotation {path!r} has mode {a.mode}; expected a '
                         f'single-channel label PNG')
    return a


def load_label_map(path: str, size: int) -> np.ndarray:
    """A single-channel label PNG resized nearest to ``size`` x ``size``: int64 (size, size)."""
    with _open_label(path) as a:
        return np.asarray(a.resize((size, size), Image.NEAREST)).astype(np.int64)


def annotation_path(image: str, ann_dir: Optional[str]) -> Optional[str]:
    """``ann_dir/<stem>.png``, else the mmseg-layout twin of ``.../img_dir/<split>/<stem>.*``
    (``.../ann_dir/<split>/<stem>.png``), else None."""
    stem = osp.splitext(osp.basename(image))[0]
    if ann_dir is not None:
        return osp.join(ann_dir, stem + SEG_SUFFIX)
    split_dir = osp.dirname(osp.abspath(image))
    img_dir = osp.dirname(split_dir)
    if osp.basename(img_dir) != 'img_dir':
        return None
    return osp.join(osp.dirname(img_dir), 'ann_dir', osp.basename(split_dir), stem + SEG_SUFFIX)


def find_annotations(images: Sequence[str], ann_dir: Optional[str],
                     logger=None) -> Optional[List[str]]:
    """One label map per image, or None when not every image has one. With ``ann_dir`` (the
    ``--ann-dir`` argument) a missing map raises; in the mmseg layout it is a warning."""
    paths = [annotation_path(img, ann_dir) for img in images]
    missing = [(img, a) for img, a in zip(images, paths) if a is None or not osp.isfile(a)]
    if not missing:
        return paths
    if ann_dir is not None:
        img, ann = missing[0]
        raise FileNotFoundError(f'--ann-dir: no label map {ann!r} for image {img!r} '
                                f'({len(missing)} of {len(images)} missing)')
    if len(missing) < len(images) and logger is not None:
        logger.warning(f'{len(missing)} of {len(images)} images have no label map in the '
                       f'mmseg layout (e.g. {missing[0][1]!r}): no label column')
    return None


class ImageFolderDataset(torch.utils.data.Dataset):
    """ImageNet-style folder ``ROOT/<split>/<class>/*.<ext>`` with Resize + CenterCrop.

    Resize the shorter side to ``resize`` (bilinear, antialiased), centre-crop ``crop`` x
    ``crop``, normalise (docs/method.md §6.2: 256 / 224). Items: ``(img (3, crop, crop) float32, label)``.

    Args:
        root (str): Dataset root.
        split (str): Sub-folder (``'train'``, ``'val'``).
        classes (list[str], optional): Class names in label order; default: the sorted
            sub-folders of ``ROOT/<split>`` (pass the train classes for val).
        resize (int), crop (int): Defaults 256, 224.
        mean, std: 0-255 RGB normalisation.
    """

    def __init__(self, root, split, classes=None, resize=256, crop=224, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, extensions=IMG_EXTENSIONS):
        folder = osp.join(root, split)
        if not osp.isdir(folder):
            raise FileNotFoundError(f'--data-root: {folder!r} is not a folder; expected '
                                    f'ROOT/{split}/<class>/*.jpg (ImageNet layout)')
        found = sorted(d for d in os.listdir(folder) if osp.isdir(osp.join(folder, d)))
        self.classes = list(classes) if classes is not None else found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(f'{folder!r} has class folders not in the training classes: '
                             f'{unknown[:10]}')
        idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = [(osp.join(folder, c, f), idx[c]) for c in found
                        for f in list_folder_images(osp.join(folder, c), extensions)]
        if not self.samples:
            raise FileNotFoundError(f'no images ({", ".join(extensions)}) under '
                                    f'{folder!r}/<class>/')
        self.resize, self.crop, self.mean, self.std = resize, crop, mean, std

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return load_center_crop(path, self.resize, self.crop, self.mean, self.std), label


class SegFolderDataset(torch.utils.data.Dataset):
    """mmseg-layout split ``ROOT/<img_dir>/<split>/*<img_suffix>`` + ``ROOT/<ann_dir>/<split>/
    *<seg_suffix>``, pairs matched by file stem.

    The image is squashed to ``size`` x ``size`` (bilinear, antialiased) and the label resized
    nearest to the same size (docs/method.md §6.1 validation: 448 -> 448). ``ann_file`` (optional, relative
    to ``root``) lists the file stems to use, one per line, in that order (mmseg's ``ann_file``,
    e.g. the STEGO curated lists of COCO-Stuff-27). Labels are ``0..C-1`` with 255
    ignored; ``reduce_zero_label`` maps 0 -> 255 and the others down by one (ADE20K). Items:
    ``(img (3, size, size) float32, label (size, size) int16)``.
    """

    def __init__(self, root, split='val', img_dir='img_dir', ann_dir='ann_dir', img_suffix='.jpg',
                 seg_suffix='.png', size=448, num_classes=None, reduce_zero_label=False,
                 ignore_index=255, mean=IMAGENET_MEAN, std=IMAGENET_STD, ann_file=None):
        idir, adir = osp.join(root, img_dir, split), osp.join(root, ann_dir, split)
        for d, opt in ((idir, '--img-dir'), (adir, '--ann-dir')):
            if not osp.isdir(d):
                raise FileNotFoundError(f'{opt}: {d!r} is not a folder (mmseg layout: '
                                        f'ROOT/img_dir/{split}/*.jpg, ROOT/ann_dir/{split}/*.png)')
        imgs = list_folder_images(idir, (img_suffix, ))
        if not imgs:
            raise FileNotFoundError(f'no *{img_suffix} images in {idir!r} (see --img-suffix)')
        if ann_file is not None:  # mmseg semantics: one file stem per line, relative to ROOT
            path = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
            if not osp.isfile(path):
                raise FileNotFoundError(f'--ann-file {path!r} does not exist')
            with open(path) as f:
                stems = [ln.strip() for ln in f if ln.strip()]
            have = {f[:-len(img_suffix)]: f for f in imgs}
            absent = [st for st in stems if st not in have]
            if absent:
                raise FileNotFoundError(f'--ann-file {path!r} lists {len(absent)} images not in '
                                        f'{idir!r}, e.g. {absent[:3]}')
            imgs = [have[st] for st in stems]
        self.samples = []
        for f in imgs:
            ann = osp.join(adir, f[:-len(img_suffix)] + seg_suffix)
            if not osp.isfile(ann):
                raise FileNotFoundError(f'annotation {ann!r} of image {f!r} is missing '
                                        f'(see --seg-suffix)')
            self.samples.append((osp.join(idir, f), ann))
        self.size, self.num_classes, self.mean, self.std = size, num_classes, mean, std
        self.reduce_zero_label, self.ignore_index = reduce_zero_label, ignore_index

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        img_path, ann_path = self.samples[i]
        _, img = load_squashed(img_path, self.size, self.mean, self.std)
        return img, self._checked_label(load_label_map(ann_path, self.size), ann_path)

    def _checked_label(self, lab: np.ndarray, ann_path: str) -> torch.Tensor:
        if self.reduce_zero_label:
            lab = np.where(lab == 0, 255, lab - 1)
            lab[lab == 254] = 255
        if self.num_classes is not None:
            bad = (lab != self.ignore_index) & ((lab < 0) | (lab >= self.num_classes))
            if bad.any():
                raise ValueError(f'annotation {ann_path!r} holds labels {np.unique(lab[bad])[:10]}'
                                 f' outside [0, {self.num_classes}) and != {self.ignore_index}: '
                                 f'check --num-classes / --reduce-zero-label')
        # int16 halves/quarters the memory of a stacked val set (448^2 labels per image)
        return torch.from_numpy(lab.astype(np.int16))


class AugmentedSegFolderDataset(SegFolderDataset):
    """:class:`SegFolderDataset` with the training augmentation of the Hummingbird memory.

    The image gets four photometric jitters (brightness, contrast, saturation, hue, each of
    strength ``jitter`` and applied with probability 0.5), then image and label one
    ``RandomResizedCrop(size, scale, ratio)`` of the original image (image bilinear and
    antialiased, label nearest); no flip. These are the open-hummingbird-eval training
    transforms (its ``scale=(0.5, 2.0)`` draws are torchvision's, where a crop larger than the
    image is redrawn, up to a centre-crop fallback). Item ``i`` of epoch ``e``
    (:meth:`set_epoch`) draws from generators seeded with ``(seed, e, i)``, so the augmented
    set does not depend on the loader's workers or order.
    """

    def __init__(self, *args, scale=(0.5, 2.0), ratio=(3 / 4, 4 / 3), jitter=0.1, seed=0,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.scale, self.ratio, self.jitter, self.seed = tuple(scale), tuple(ratio), jitter, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i):
        from torchvision import transforms as T
        from torchvision.transforms import functional as TF
        img_path, ann_path = self.samples[i]
        img = read_rgb(img_path)
        with _open_label(ann_path) as a:
            lab = a.copy()
        if lab.size != img.size:
            raise ValueError(f'annotation {ann_path!r} is {lab.size[0]}x{lab.size[1]} but its '
                             f'image {img_path!r} is {img.size[0]}x{img.size[1]}')
        j = self.jitter
        photometric = T.Compose([T.RandomApply([t], p=0.5) for t in (
            T.ColorJitter(brightness=j), T.ColorJitter(contrast=j), T.ColorJitter(saturation=j),
            T.ColorJitter(hue=j))])
        size = (self.size, self.size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, i))
            img = photometric(img)
            top, left, h, w = T.RandomResizedCrop.get_params(img, self.scale, self.ratio)
        img = TF.resized_crop(img, top, left, h, w, size, TF.InterpolationMode.BILINEAR,
                              antialias=True)
        lab = TF.resized_crop(lab, top, left, h, w, size, TF.InterpolationMode.NEAREST)
        lab = np.asarray(lab).astype(np.int64)
        return to_normalized_tensor(img, self.mean, self.std), self._checked_label(lab, ann_path)

