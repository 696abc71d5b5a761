"""Image constants and the one way to turn an image file into a normalised tensor.

Every tool that runs a backbone on image files (the kNN files, the probes, the pictures) reads
them here, so decoding, the ImageNet statistics and the list of image extensions exist once.
Training and mmseg evaluation keep their OpenMMLab pipelines (``LoadImageFromFile`` +
data preprocessor); these helpers serve the offline tools.
"""
import os
import os.path as osp
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = [
    'IMAGENET_MEAN', 'IMAGENET_STD', 'IMG_EXTENSIONS', 'check_jpeg_complete', 'read_rgb',
    'to_normalized_tensor', 'load_squashed', 'load_center_crop', 'list_folder_images',
    'collect_images'
]

# ImageNet statistics in 0-255 RGB (mmpretrain / mmseg data preprocessors use the same numbers)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# mmpretrain's ``ImageNet.IMG_EXTENSIONS`` plus .tiff and .webp (matched case-insensitively)
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')

JPEG_EOI = b'\xff\xd9'
_JPEG_TAIL = 1024  # bytes searched for the end-of-image marker (padding after it is common)


def check_jpeg_complete(path: str) -> None:
    """Raise ``ValueError`` if the JPEG ``path`` has no end-of-image marker near its end.

    OpenCV (mmcv's default decoder) decodes a truncated JPEG without error, filling the missing
    rows with grey, so truncation is checked separately: entropy-coded scan data never holds
    the bytes ``FF D9`` (0xFF is always stuffed), so a file cut inside the scan has no marker
    in its tail. Reads only the last ``_JPEG_TAIL`` bytes. Other formats are not checked.
    """
    if not path.lower().endswith(('.jpg', '.jpeg')):
        return
    with open(path, 'rb') as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _JPEG_TAIL))
        tail = f.read()
    if JPEG_EOI not in tail:
        raise ValueError(f'truncated JPEG: no end-of-image marker (FF D9) in the last '
                         f'{len(tail)} of {size} bytes')


def read_rgb(path: str, check_truncation: bool = False) -> Image.Image:
    """Decode ``path`` as an RGB PIL image; the error names the file.

    Args:
        path (str): Image file.
        check_truncation (bool): Also refuse JPEGs cut short (:func:`check_jpeg_complete`).
    """
    try:
        if check_truncation:
            check_jpeg_complete(path)
        with Image.open(path) as im:
            return im.convert('RGB')
    except Exception as e:  # decoding errors come as many types (OSError, SyntaxError, ...)
        raise RuntimeError(f'cannot read image {path!r}: {type(e).__name__}: {e}') from e


def to_normalized_tensor(img, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(H, W, 3) uint8 RGB (PIL image or array) -> normalised float32 tensor (3, H, W)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def load_squashed(path: str, size: Union[int, Sequence[int]], mean=IMAGENET_MEAN,
                  std=IMAGENET_STD) -> Tuple[np.ndarray, torch.Tensor]:
    """An image squashed to ``size`` (h, w), or ``size`` x ``size`` for an int (bilinear; the
    segmentation validation resize).

    Returns:
        tuple: uint8 RGB (h, w, 3) and the normalised float32 tensor (3, h, w).
    """
    h, w = (size, size) if isinstance(size, int) else size
    img = read_rgb(path).resize((w, h), Image.BILINEAR)
    return np.asarray(img), to_normalized_tensor(img, mean, std)


def load_center_crop(path: str, resize: int, crop: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     interpolation: str = 'bilinear',
                     check_truncation: bool = False) -> torch.Tensor:
    """Shorter side resized to ``resize`` (antialiased), centre crop ``crop`` x ``crop``,
    normalised: float32 (3, crop, crop). The classification evaluation transform (256 / 224)."""
    from torchvision.transforms import functional as TF
    mode = dict(bilinear=TF.InterpolationMode.BILINEAR,
                bicubic=TF.InterpolationMode.BICUBIC)[interpolation]
    img = TF.resize(read_rgb(path, check_truncation), resize, interpolation=mode,
                    antialias=True)
    return to_normalized_tensor(TF.center_crop(img, crop), mean, std)


def list_folder_images(folder: str, extensions: Sequence[str] = IMG_EXTENSIONS) -> List[str]:
    """File names (not paths) of the images directly in ``folder``, sorted."""
    suffixes = tuple(s.lower() for s in extensions)
    return sorted(f for f in os.listdir(folder)
                  if f.lower().endswith(suffixes) and osp.isfile(osp.join(folder, f)))


def collect_images(paths: Sequence[str],
                   extensions: Sequence[str] = IMG_EXTENSIONS,
                   arg: str = 'IMAGE_OR_DIR') -> List[str]:
    """Image files from files and folders (a folder: its image files, sorted, not recursive).

    Raises:
        FileNotFoundError: a path that does not exist; ValueError: a folder without images.
        Both messages start with ``arg``, the argument the paths came from.
    """
    out = []
    for path in paths:
        if osp.isdir(path):
            found = [osp.join(path, f) for f in list_folder_images(path, extensions)]
            if not found:
                raise ValueError(f'{arg}: no images ({", ".join(extensions)}) in folder '
                                 f'{path!r}')
            out.extend(found)
        elif osp.isfile(path):
            out.append(path)
        else:
            raise FileNotFoundError(f'{arg}: image path not found: {path!r}')
    return out
