"""tools/check_data.py on a generated workspace (docs/data.md layout, the tiny CoTAP config)
with broken, converted and too small images, and a kNN file that does not fit its folder; and
the training dataset's handling of the same files."""
import os.path as osp

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import load_tool, make_cotap_workspace
from cotap_mm.datasets.image_list import ImageList, image_problem

check_data = load_tool('check_data')


def _formats(folder):
    """The same scene as greyscale, RGBA, palette, CMYK and 16-bit files."""
    rgb = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
    paths = {}
    for name, image in (('grey.jpg', Image.fromarray(rgb[..., 0])),
                        ('rgba.png', Image.fromarray(np.dstack([rgb, rgb[..., 0]]))),
                        ('palette.png', Image.fromarray(rgb).convert('P')),
                        ('cmyk.jpg', Image.fromarray(rgb).convert('CMYK'))):
        paths[name] = osp.join(folder, name)
        image.save(paths[name])
    paths['u16.png'] = osp.join(folder, 'u16.png')
    cv2.imwrite(paths['u16.png'], rgb.astype(np.uint16) * 257)
    return paths


def test_greyscale_rgba_palette_cmyk_16bit_become_rgb(tmp_path):
    paths = _formats(str(tmp_path))
    ds = ImageList(data_root=str(tmp_path), on_bad_image='error')
    assert len(ds) == len(paths)
    for i in range(len(ds)):
        img = ds[i]['img']
        assert img.shape == (70, 90, 3) and img.dtype == np.uint8, ds.get_img_path(i)
        assert image_problem(ds.get_img_path(i), min_size=64) is None
    assert 'too small' in image_problem(paths['grey.jpg'], min_size=71)


def test_max_bad_images_stops_a_broken_folder(tmp_path):
    for i in range(4):
        (tmp_path / f'{i}.jpg').write_bytes(b'not a jpeg')
    ds = ImageList(data_root=str(tmp_path), max_bad_images=2)
    with pytest.warns(UserWarning, match='skipping unreadable'):
        assert ds.prepare_data(0) is None and ds.prepare_data(1) is None
    with pytest.raises(RuntimeError, match='more than max_bad_images=2 .*tools/check_data.py'):
        ds.prepare_data(2)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = make_cotap_workspace(tmp_path_factory.mktemp('check_data'))
    coco = sorted((root / 'data/coco/train2017').iterdir())
    coco[1].write_bytes(b'not an image at all')                     # unreadable
    coco[2].write_bytes(coco[2].read_bytes()[:600])                  # truncated JPEG
    imagenet = sorted((root / 'data/imagenet/train/n00000000').iterdir())
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(imagenet[0], 'JPEG')  # too small
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).convert('CMYK').save(imagenet[1],
                                                                               'JPEG')  # fine
    return root


def test_lists_every_problem_file(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)  # the config's data_root is relative, as for tools/train.py
    rc = check_data.main([str(workspace / 'tiny.py'), '--workers', '2'])
    out = capsys.readouterr().out
    coco = [f'data/coco/train2017/{p.name}'
            for p in sorted((workspace / 'data/coco/train2017').iterdir())]
    imagenet = [f'data/imagenet/train/n00000000/{p.name}'
                for p in sorted((workspace / 'data/imagenet/train/n00000000').iterdir())]
    assert rc == 1
    assert f'{coco[1]}: unreadable' in out
    assert f'{coco[2]}: unreadable: ValueError: truncated JPEG' in out
    assert f'{imagenet[0]}: too small: 40x30 < 64 px' in out  # the tiny config's global crop
    assert imagenet[1] not in out  # CMYK is converted, not a problem
    assert '3 problem images of 12 in 2 folders, 0 dataset errors' in out


def test_lists_a_knn_file_that_does_not_fit(workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    nns = workspace / 'data/nns/nns_vit_base_coco_train_None_224.npz'
    saved = nns.read_bytes()
    try:
        np.savez(nns, nns=np.tile(np.arange(4)[:, None], (1, 5)))  # 4 rows for 6 images
        rc = check_data.main([str(workspace / 'tiny.py'), '--workers', '1', '--min-size', '0'])
    finally:
        nns.write_bytes(saved)
    out = capsys.readouterr().out
    assert rc == 1
    assert 'kNN file data/nns/nns_vit_base_coco_train_None_224.npz: ValueError:' in out
    # the folder of the unusable kNN file is still checked, image by image
    assert 'problem images of 12 in 2 folders, 1 dataset errors' in out
