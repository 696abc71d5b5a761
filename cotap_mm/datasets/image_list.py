"""A label-free dataset of all images under a folder (COCO train2017, ImageNet train)."""
import hashlib
import os
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset

from cotap_mm.registry import DATASETS, TRANSFORMS
from cotap_mm.utils.checks import check_choice
from cotap_mm.utils.images import IMG_EXTENSIONS, check_jpeg_complete

# IMG_EXTENSIONS and check_jpeg_complete live in cotap_mm.utils.images
__all__ = ['ImageList', 'list_images', 'image_list_digest', 'image_problem']


def image_problem(path: str, min_size: int = 0) -> Optional[str]:
    """What would stop the training pipeline on ``path``, or ``None`` if it is fine.

    Decodes as the training does (mmcv's ``LoadImageFromFile`` defaults: OpenCV, colour, which
    turns greyscale, RGBA, palette, CMYK and 16-bit files into 8-bit 3-channel images), checks
    JPEG truncation (:func:`check_jpeg_complete`) and, with ``min_size``, the shorter side
    (smaller images are upsampled by the crops, with a warning).
    """
    import mmcv
    try:
        check_jpeg_complete(path)
        with open(path, 'rb') as f:
            img = mmcv.imfrombytes(f.read(), flag='color', backend='cv2')
    except Exception as e:  # decoding errors come as many types (cv2, IO, ValueError)
        return f'unreadable: {type(e).__name__}: {e}'
    if img is None:
        return 'unreadable: not an image the decoder knows'
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype.name != 'uint8':
        return f'not convertible to 8-bit RGB: decoded as {img.dtype.name} {img.shape}'
    if min(img.shape[:2]) < min_size:
        return f'too small: {img.shape[1]}x{img.shape[0]} < {min_size} px on the shorter side'
    return None



def list_images(root: str, extensions: Sequence[str] = IMG_EXTENSIONS) -> List[str]:
    """All image files under ``root``, recursively, as sorted absolute-or-as-given paths.

    The order is the sort order of the paths *relative to* ``root`` (so ``n01440764/a.JPEG``
    sorts by class folder, then file name), and extensions match case-insensitively. This is
    the order of :class:`ImageList` and of the rows of ``tools/precompute_knn.py``'s npz: both
    must use this function, or the kNN rows no longer point at the right images.

    Args:
        root (str): Folder to scan (``data/coco/train2017``, ``data/imagenet/train``).
        extensions (Sequence[str]): File-name suffixes to keep, e.g. ``('.jpg', '.jpeg')``.

    Returns:
        list[str]: ``osp.join(root, relpath)`` for every image, sorted by ``relpath``.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'list_images: image folder {root!r} does not exist; see '
                                'docs/data.md for the expected layout (data/coco/train2017, '
                                'data/imagenet/train/<wnid>).')
    exts = tuple(e.lower() if e.startswith('.') else '.' + e.lower() for e in extensions)
    rel = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(exts):
                rel.append(osp.relpath(osp.join(dirpath, name), root))
    rel.sort()
    return [osp.join(root, r) for r in rel]


def image_list_digest(paths: Sequence[str], root: str) -> str:
    """SHA-1 of the image list relative to ``root`` (``/``-separated, one path per line).

    ``tools/precompute_knn.py`` stores it in the kNN npz and :class:`KNNPairDataset` compares
    it with its own list, so a kNN file of another folder (or of the same folder after images
    were added, removed or renamed) is refused even when the image count happens to match.

    Args:
        paths (Sequence[str]): Image paths under ``root``, in dataset order.
        root (str): The folder they are listed from.

    Returns:
        str: 40 hex digits.
    """
    rel = (osp.relpath(p, root).replace(os.sep, '/') for p in paths)
    return hashlib.sha1('\n'.join(rel).encode('utf-8')).hexdigest()


@DATASETS.register_module()
class ImageList(BaseDataset):
    """All images under ``data_root/data_prefix``, sorted (:func:`list_images`), no labels.

    Each data info is ``dict(img_path=..., sample_idx=...)``; the pipeline (default: mmcv
    ``LoadImageFromFile``, BGR uint8) loads it.

    Unreadable images: with ``on_bad_image='skip'`` (default) a failing image is reported once
    with a warning, counted in :attr:`num_bad_images` (per process: each dataloader worker
    keeps its own count) and remembered, and :meth:`prepare_data` returns ``None`` so that the
    caller draws another index (mmengine's ``__getitem__`` does this up to ``max_refetch``
    times; :class:`KNNPairDataset` does its own retries). ``max_bad_images`` bounds the skips
    per process: beyond it a ``RuntimeError`` says the folder is likely broken (a few bad files
    in a 118k-image folder are skipped; a failed mount is not trained on). With ``'error'`` a
    ``RuntimeError`` names the file at the first one. Truncated JPEGs (which OpenCV would decode silently, grey-filled) count as
    unreadable (:func:`check_jpeg_complete`). The images are not decoded up front (too slow for
    ImageNet); ``tools/check_data.py CONFIG`` lists all problem files of a config's folders
    before a run (as does ``tools/precompute_knn.py``, which decodes every image).

    Args:
        data_root (str): Dataset root, e.g. ``'data/coco'``. Defaults to ``''``.
        data_prefix (str | dict): Sub-folder holding the images, e.g. ``'train2017'`` or
            ``dict(img_path='train2017')``. Defaults to ``''``.
        extensions (Sequence[str]): Image suffixes (case-insensitive). Defaults to
            :data:`IMG_EXTENSIONS`.
        on_bad_image (str): ``'skip'`` or ``'error'``. Defaults to ``'skip'``.
        max_bad_images (int, optional): With ``'skip'``, the most unreadable images one process
            skips before it stops. Defaults to 1000; None: no bound.
        pipeline (Sequence[dict | callable]): Built in mmpretrain's ``TRANSFORMS``.
            Defaults to ``[dict(type='LoadImageFromFile')]``.
        **kwargs: Other :class:`mmengine.dataset.BaseDataset` arguments (``indices``,
            ``lazy_init``, ``max_refetch``, ``test_mode``, ...).
    """

    ON_BAD_IMAGE = ('skip', 'error')

    def __init__(self,
                 data_root: str = '',
                 data_prefix: Union[str, dict] = '',
                 extensions: Sequence[str] = IMG_EXTENSIONS,
                 on_bad_image: str = 'skip',
                 max_bad_images: Optional[int] = 1000,
                 pipeline: Optional[Sequence] = None,
                 **kwargs):
        check_choice('ImageList', 'on_bad_image', on_bad_image, self.ON_BAD_IMAGE)
        if isinstance(data_prefix, str):
            data_prefix = dict(img_path=data_prefix)
        if pipeline is None:
            pipeline = [dict(type='LoadImageFromFile')]
        # Build in mmpretrain's registry, whatever the current default scope.
        pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        self.extensions = tuple(extensions)
        self.on_bad_image = on_bad_image
        self.max_bad_images = max_bad_images
        self.num_bad_images = 0
        self._bad_indices = set()
        super().__init__(data_root=data_root, data_prefix=data_prefix, pipeline=pipeline,
                         **kwargs)

    @property
    def img_dir(self) -> str:
        return self.data_prefix['img_path']

    def load_data_list(self) -> List[dict]:
        if not osp.isdir(self.img_dir):
            raise FileNotFoundError(
                f'ImageList: image folder {self.img_dir!r} does not exist (data_root='
                f'{self.data_root!r}, data_prefix={self.data_prefix["img_path"]!r}). Put the '
                'images there (layout: docs/data.md) or point the config\'s data_root / '
                'data_prefix at them, e.g. `--cfg-options data_root=/path/to/data/`.')
        paths = list_images(self.img_dir, self.extensions)
        if not paths:
            raise FileNotFoundError(f'ImageList: no image with extensions {self.extensions} '
                                    f'under {self.img_dir!r} (data_root={self.data_root!r}, '
                                    f'data_prefix={self.data_prefix["img_path"]!r}); check '
                                    'that the images were extracted there, the data_root / '
                                    'data_prefix of the config, or its extensions argument.')
        # Kept here: after full_init the list is serialized (and possibly subset by `indices`).
        self._list_digest = image_list_digest(paths, self.img_dir)
        return [dict(img_path=p) for p in paths]

    def list_digest(self) -> str:
        """:func:`image_list_digest` of all images under the folder (before ``indices``),
        which the kNN file records."""
        self.full_init()
        return self._list_digest

    def get_img_path(self, idx: int) -> str:
        return self.get_data_info(idx)['img_path']

    def prepare_data(self, idx: int) -> Optional[dict]:
        """Run the pipeline on image ``idx``; ``None`` if it is unreadable and we skip."""
        if idx in self._bad_indices:
            return None
        data_info = self.get_data_info(idx)
        try:
            check_jpeg_complete(data_info['img_path'])
            results = self.pipeline(data_info)
            if results is None or results.get('img') is None:
                raise ValueError('the pipeline returned no image')
        except Exception as e:  # decoding errors come as many types (cv2, PIL, assert, IO)
            path = data_info.get('img_path')
            if self.on_bad_image == 'error':
                raise RuntimeError(
                    f'ImageList: cannot read image {path!r} (index {idx}): '
                    f'{type(e).__name__}: {e}. Replace or delete the file (then re-run '
                    'tools/precompute_knn.py on the folder); `tools/check_data.py CONFIG` lists '
                    "all problem files at once. Or set on_bad_image='skip'.") from e
            self._bad_indices.add(idx)
            self.num_bad_images += 1
            if self.max_bad_images is not None and self.num_bad_images > self.max_bad_images:
                raise RuntimeError(
                    f'ImageList: more than max_bad_images={self.max_bad_images} unreadable '
                    f'images under {self.img_dir!r} in this process (the last: {path!r}, '
                    f'{type(e).__name__}: {e}); the folder is likely broken (a failed copy or '
                    'mount?). List them all with `python tools/check_data.py CONFIG`, or raise '
                    'max_bad_images.') from e
            warnings.warn(f'ImageList: skipping unreadable image {path!r} (index {idx}): '
                          f'{type(e).__name__}: {e} ({self.num_bad_images} skipped so far in '
                          'this process). Replace or delete it (then re-run '
                          'tools/precompute_knn.py); `tools/check_data.py CONFIG` lists all '
                          'problem files.')
            return None
        return results
