"""COCO-Stuff-27: the 27 coarse COCO-Stuff classes of IIC/STEGO, as used by CoTAP (docs/method.md §6.1),
and COCO-Stuff-15, its 15 stuff super-classes alone, as Leopart and NeCo score linear probes
(docs/probes.md, "Evaluation protocols by name").

Needs mmsegmentation: imported by :mod:`cotap_mm.segmentation`, never by ``import cotap_mm``.

The fine->coarse table (:data:`FINE_TO_COARSE`) and the raw-label checks are plain numpy and are
used by ``tools/dataset_converters/coco_stuff27.py``, which writes the 27-class label PNGs this
dataset reads.
"""
import os.path as osp

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from cotap_mm.utils.fileio import atomic_open

__all__ = [
    'COCOStuff27Dataset', 'COCOStuff15Dataset', 'COCOSTUFF27_CLASSES', 'COCOSTUFF15_CLASSES',
    'FINE_TO_COARSE', 'UNUSED_RAW_IDS', 'fine_to_coarse_lut', 'check_raw_map', 'convert_one', 'read_ids', 'DEFAULT_LISTS'
]

# the IIC/STEGO curated image lists, relative to the COCO-Stuff root
DEFAULT_LISTS = {
    'train2017': 'curated/train2017/Coco164kFull_Stuff_Coarse.txt',
    'val2017': 'curated/val2017/Coco164kFull_Stuff_Coarse_7.txt',
}
TRAIN_IDS_SUFFIX = '_labelTrainIds.png'  # mmseg's converter output: already remapped

# The 27 coarse classes in STEGO's order: the 12 COCO "thing" supercategories (0-11), then the
# 15 "stuff" supercategories (12-26). STEGO names two of each kind 'food' and 'furniture'; they are
# suffixed here so that IoUMetric's per-class table is unambiguous.
COCOSTUFF27_CLASSES = (
    'electronic', 'appliance', 'food-things', 'furniture-things', 'indoor', 'kitchen',
    'accessory', 'animal', 'outdoor', 'person', 'sports', 'vehicle',  # things 0-11
    'ceiling', 'floor', 'food-stuff', 'furniture-stuff', 'rawmaterial', 'textile', 'wall',
    'window', 'building', 'ground', 'plant', 'sky', 'solid', 'structural', 'water')  # stuff 12-26

# STEGO's fine->coarse table (src/data.py, class Coco), written as runs: for each coarse class, the
# raw stuffthingmaps values (0..181 = COCO-Stuff id - 1) that map onto it.
_COARSE_TO_FINE = {
    0: [*range(71, 77)],                     # electronic: tv .. cell phone
    1: [*range(77, 83)],                     # appliance: microwave .. (unused id 82)
    2: [*range(51, 61)],                     # food (things): banana .. cake
    3: [*range(61, 71)],                     # furniture (things): chair .. (unused id 70)
    4: [*range(83, 91)],                     # indoor: book .. (unused id 90)
    5: [*range(43, 51)],                     # kitchen: (unused 44) bottle .. bowl
    6: [*range(25, 33)],                     # accessory: (unused 25) backpack .. suitcase
    7: [*range(15, 25)],                     # animal: bird .. giraffe
    8: [*range(9, 15)],                      # outdoor: traffic light .. bench
    9: [0],                                  # person
    10: [*range(33, 43)],                    # sports: frisbee .. tennis racket
    11: [*range(1, 9)],                      # vehicle: bicycle .. boat
    12: [101, 102],                          # ceiling
    13: [100, 113, 114, 115, 116, 117],      # floor
    14: [120, 121, 152, 169],                # food (stuff)
    15: [97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164],  # furniture (stuff)
    16: [99, 131, 138, 142],                 # rawmaterial
    17: [91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167],  # textile
    18: [*range(170, 177)],                  # wall
    19: [179, 180],                          # window
    20: [94, 95, 127, 150, 157, 165],        # building
    21: [110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158],  # ground
    22: [93, 96, 118, 123, 128, 133, 141, 162, 168],  # plant
    23: [105, 156],                          # sky
    24: [126, 134, 149, 159, 161, 181],      # solid
    25: [98, 112, 137, 145, 163],            # structural
    26: [119, 147, 154, 177, 178],           # water
}
#: dict raw value (0..181) -> coarse class (0..26); 255 (unlabeled) is kept as 255.
FINE_TO_COARSE = {fine: coarse for coarse, fines in _COARSE_TO_FINE.items() for fine in fines}
assert sorted(FINE_TO_COARSE) == list(range(182)), 'the fine->coarse table must cover 0..181'

#: Raw values that never occur in COCO-Stuff stuffthingmaps: the 11 unused COCO ids (12, 26, 29,
#: 30, 45, 66, 68, 69, 71, 83, 91) minus one. mmseg's ``*_labelTrainIds.png`` (0..170, compacted)
#: does use them, which is how a converter tells the two apart.
UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)

#: COCO-Stuff-15: the 15 stuff super-classes (coarse classes 12-26 above) numbered in the sorted
#: order of their names, as NeCo's and Leopart's ``COCOSegmentation`` numbers the supercategories
#: of COCO-Stuff's stuff json; every thing pixel is ignored (255), as their 'other' class is.
COCOSTUFF15_CLASSES = tuple(sorted(COCOSTUFF27_CLASSES[12:]))


def fine_to_coarse_lut(num_classes=27):
    """The 256-entry uint8 lookup table raw value -> coarse label (255 for 255 and 182..254).

    Args:
        num_classes (int): 27 (COCO-Stuff-27) or 15 (COCO-Stuff-15: stuff super-classes only,
            the 12 thing classes -> 255).

    Returns:
        np.ndarray: (256, ) uint8; ``lut[raw_map]`` is the ``num_classes``-class map.
    """
    if num_classes not in (27, 15):
        raise ValueError(f'fine_to_coarse_lut: num_classes must be 27 or 15, got {num_classes}')
    lut = np.full(256, 255, dtype=np.uint8)
    for fine, coarse in FINE_TO_COARSE.items():
        if num_classes == 27:
            lut[fine] = coarse
        elif coarse >= 12:
            lut[fine] = COCOSTUFF15_CLASSES.index(COCOSTUFF27_CLASSES[coarse])
    return lut


# -- conversion of the raw stuffthingmaps (tools/dataset_converters/coco_stuff27.py) ------


def refuse_train_ids(what):
    """Raise the error that names mmseg's already-remapped maps and what to use instead."""
    raise ValueError(
        f'{what} looks like mmseg\'s COCO-Stuff-171 *_labelTrainIds.png (values 0..170, already '
        'remapped); the STEGO fine->coarse table applies to the RAW stuffthingmaps (0..181, 255 '
        'unlabeled) from stuffthingmaps_trainval2017.zip. Point the converter at those (their '
        'files are named <id>.png).')


def check_raw_map(label, path):
    """Raise if ``label`` (uint8 HxW) is not a raw COCO-Stuff stuffthingmap."""
    values = np.unique(label)
    bad = values[(values > 181) & (values != 255)]
    if bad.size:
        raise ValueError(f'{path}: values {bad.tolist()[:10]} are outside 0..181 and 255; not a '
                         'COCO-Stuff stuffthingmap')
    unused = sorted(set(values.tolist()) & set(UNUSED_RAW_IDS))
    if unused:
        refuse_train_ids(f'{path} (it contains {unused}, ids that COCO-Stuff never uses)')


def convert_one(image_id, src_dir, dst_dir, lut):
    """Convert ``src_dir/<id>.png`` to ``dst_dir/<id>.png``; returns the number of labelled
    pixels."""
    src = osp.join(src_dir, image_id + '.png')
    if not osp.isfile(src):
        if osp.isfile(osp.join(src_dir, image_id + TRAIN_IDS_SUFFIX)):
            refuse_train_ids(f'{src_dir} (it has {image_id}{TRAIN_IDS_SUFFIX} but no '
                              f'{image_id}.png)')
        raise FileNotFoundError(f'{src}: missing label map of a listed image id')
    with Image.open(src) as img:
        if img.mode not in ('L', 'P'):
            raise ValueError(f'{src}: expected a single-channel (L or P) PNG, got mode {img.mode}')
        label = np.array(img, dtype=np.uint8)
    check_raw_map(label, src)
    coarse = lut[label]
    dst = osp.join(dst_dir, image_id + '.png')
    with atomic_open(dst) as f:  # an interrupted run leaves no truncated label
        Image.fromarray(coarse, mode='L').save(f, format='PNG')
    return int((coarse != 255).sum())


def read_ids(list_file):
    """The image ids of a curated list (one per line, without extension)."""
    with open(list_file) as f:
        ids = [line.strip() for line in f if line.strip()]
    for image_id in ids:
        if osp.splitext(image_id)[1]:
            raise ValueError(f'{list_file}: entries must be image ids without extension, got '
                             f'{image_id!r}')
    return ids


def _palette(num_classes):
    """PASCAL-VOC-style bit-interleaved colours (deterministic, distinct), skipping black."""
    palette = []
    for label in range(1, num_classes + 1):
        rgb, ind = [0, 0, 0], label
        for shift in reversed(range(8)):
            for ch in range(3):
                rgb[ch] |= ((ind >> ch) & 1) << shift
            ind >>= 3
        palette.append(rgb)
    return palette


@DATASETS.register_module()
class COCOStuff27Dataset(BaseSegDataset):
    """COCO-Stuff-27 (IIC/STEGO curated subsets), for mmsegmentation.

    Layout (``tools/dataset_converters/coco_stuff27.py`` writes ``annotations27``)::

        data/cocostuff/
        ├── images/{train2017,val2017}/<id>.jpg
        ├── annotations27/{train2017,val2017}/<id>.png     # 0..26, 255 = ignore
        └── curated/train2017/Coco164kFull_Stuff_Coarse.txt
            curated/val2017/Coco164kFull_Stuff_Coarse_7.txt

    ``ann_file`` is the STEGO curated list: one image id (file name without extension) per line;
    :class:`BaseSegDataset` adds ``img_suffix`` / ``seg_map_suffix``. Without ``ann_file`` every
    image under ``data_prefix['img_path']`` is used.

    The labels must already be the 27 coarse classes; the raw stuffthingmaps (0..181) or mmseg's
    ``*_labelTrainIds.png`` (0..170) would be read as wrong classes without an error (both are
    uint8 PNGs), so point ``seg_map_path`` at the converter's output.

    Args:
        img_suffix (str): Defaults to '.jpg'.
        seg_map_suffix (str): Defaults to '.png'.
        **kwargs: Other arguments of :class:`mmseg.datasets.BaseSegDataset` (``data_root``,
            ``data_prefix``, ``ann_file``, ``pipeline``, ...).
    """
    METAINFO = dict(classes=COCOSTUFF27_CLASSES, palette=_palette(len(COCOSTUFF27_CLASSES)))

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        if kwargs.get('reduce_zero_label', False):
            raise ValueError(f'{type(self).__name__}: reduce_zero_label must be False (class 0, '
                             f"{self.METAINFO['classes'][0]!r}, is a real class; 255 is the "
                             'ignore value)')
        if str(seg_map_suffix).endswith('_labelTrainIds.png'):
            raise ValueError(
                f'COCOStuff27Dataset: seg_map_suffix={seg_map_suffix!r} points at mmseg\'s '
                'COCO-Stuff-171 train ids, not the 27 coarse classes; convert the raw '
                'stuffthingmaps with tools/dataset_converters/coco_stuff27.py and use its '
                "'.png' output")
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class COCOStuff15Dataset(COCOStuff27Dataset):
    """COCO-Stuff-15: the 15 stuff super-classes (:data:`COCOSTUFF15_CLASSES`), things ignored.

    Labels from ``tools/dataset_converters/coco_stuff27.py --classes 15`` (``annotations15``);
    arguments as :class:`COCOStuff27Dataset`.
    """
    METAINFO = dict(classes=COCOSTUFF15_CLASSES, palette=_palette(len(COCOSTUFF15_CLASSES)))
