"""Bad inputs give one clear message naming the file / key and what to do, and leave no
checkpoint or output file behind.

Each case is triggered the way a user would: tools/train.py (in-process) on a tiny CoTAP config
(configs/cotap_vit-s16_coco.py shrunk as in test_cotap_train.py) over generated images in the
documented layout, with kNN files written by tools/precompute_knn.py; or tools/precompute_knn.py
itself.
"""
import logging
import os
import os.path as osp
import shutil
import warnings

import numpy as np
import pytest
import torch

import cotap_mm  # noqa: F401  (registrations, torch.load allow-list)
from conftest import load_tool, make_cotap_workspace, tiny_cotap_config, write_scene_image

train_tool = load_tool('train')
knn_tool = load_tool('precompute_knn')
TINY = tiny_cotap_config(max_iters=1, checkpoint_interval=1)

COCO = 'data/coco/train2017'
IMAGENET = 'data/imagenet/train'
COCO_NNS = 'data/nns/nns_vit_base_coco_train_None_224.npz'
KNN_ARGS = ['--arch', 'tiny', '--k', '5', '--image-size', '32', '--num-workers', '0',
            '--device', 'cpu']


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """6 COCO images, 2 x 3 ImageNet images (the same count: only the recorded image list tells
    their kNN files apart), both kNN files, and the tiny config."""
    return make_cotap_workspace(tmp_path_factory.mktemp('bad_inputs'), TINY, knn_image_size=32)


@pytest.fixture(autouse=True)
def _fast_config_text(monkeypatch):
    """mmengine formats the config with yapf for the log and the work-dir dump: seconds per
    run on a loaded CPU and irrelevant here."""
    from mmengine.config import Config
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))


_runs = iter(range(10**6))


def train(workspace, monkeypatch, work_dir, *options, config='tiny.py'):
    """tools/train.py tiny.py in-process from the workspace.

    Paths in ``options`` are kept short and relative to the workspace, as a user's would be:
    mmengine formats the config with yapf, which takes seconds per long absolute path.
    """
    monkeypatch.chdir(workspace)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    # a fresh logger / message hub / visualizer per run (mmengine keys them by this name)
    name = f'r{os.getpid()}_{next(_runs)}'
    train_tool.main([config, '--work-dir', rel(workspace, work_dir), '--cfg-options',
                     f'experiment_name={name}', *options])


def rel(workspace, path):
    return osp.relpath(str(path), str(workspace))


def scratch(workspace, name):
    """A fresh folder ``name`` in the workspace (the tests share the module's workspace)."""
    path = workspace / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def checkpoints(work_dir):
    """Checkpoints and mmengine's last_checkpoint pointer anywhere under ``work_dir``."""
    found = []
    for dirpath, _, files in os.walk(work_dir):
        found += [osp.relpath(osp.join(dirpath, f), work_dir) for f in files
                  if f.endswith('.pth') or f == 'last_checkpoint' or '.tmp' in f]
    return sorted(found)


def copy_coco(workspace, name, num_images=6):
    """A copy ``name/train2017`` of the first COCO images (same file names, so with all 6 the
    kNN file still matches)."""
    dst = scratch(workspace, name) / 'train2017'
    dst.mkdir()
    for i in range(num_images):
        shutil.copy(workspace / COCO / f'{i:012d}.jpg', dst)
    return dst


def three_image_data(workspace, name):
    """``name/train2017`` with 3 images and its kNN file ``name/nns.npz``, and the options that
    train on it as both subsets with batch 3: every image is loaded in iteration 1."""
    folder = copy_coco(workspace, name, num_images=3)
    knn_tool.main([str(folder), str(folder.parent / 'nns.npz'), *KNN_ARGS, '--k', '3'])
    options = ['train_dataloader.batch_size=3']
    for subset in ('coco', 'imagenet'):
        options += [f'train_dataloader.dataset.{subset}.dataset.data_root={name}',
                    f'train_dataloader.dataset.{subset}.dataset.data_prefix=train2017',
                    f'train_dataloader.dataset.{subset}.nns_file={name}/nns.npz',
                    f'train_dataloader.dataset.{subset}.num_neighbors=2']
    return folder, options


# -- data root / folder ----------------------------------------------------------------------

@pytest.mark.parametrize('case', ['missing_root', 'empty_folder'])
def test_missing_or_empty_image_folder(workspace, monkeypatch, case):
    folder = scratch(workspace, case) / 'coco'
    if case == 'empty_folder':
        (folder / 'train2017').mkdir(parents=True)
        (folder / 'train2017' / 'README.txt').write_text('images go here')
    work_dir = workspace / case / 'work'
    with pytest.raises(FileNotFoundError) as info:
        train(workspace, monkeypatch, work_dir,
              f'train_dataloader.dataset.coco.dataset.data_root={rel(workspace, folder)}')
    msg = str(info.value)
    assert f"'{case}/coco/train2017'" in msg and 'data_root' in msg
    if case == 'missing_root':
        assert 'does not exist' in msg and 'docs/data.md' in msg
    else:
        assert 'no image with extensions' in msg and 'extracted' in msg
    assert checkpoints(work_dir) == []


# -- corrupt / truncated images --------------------------------------------------------------

def _damage(path, how):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(b'this is not a JPEG' if how == 'corrupt' else data[:len(data) // 2])


@pytest.mark.parametrize('how', ['corrupt', 'truncated'])
def test_unreadable_image_in_training(workspace, monkeypatch, how):
    """The default (on_bad_image='skip') trains on, warning once with the file and what to do;
    on_bad_image='error' stops naming the file, before any checkpoint. (The images are not
    decoded up front: too slow for ImageNet; precompute_knn lists all bad files, see below.)"""
    coco, common = three_image_data(workspace, how)
    _damage(coco / '000000000001.jpg', how)
    bad = f'{how}/train2017/000000000001.jpg'  # as the config lists it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train(workspace, monkeypatch, workspace / how / 'skip', *common)
    msgs = [str(w.message) for w in caught if 'skipping unreadable image' in str(w.message)]
    assert msgs and bad in msgs[0] and 'tools/precompute_knn.py' in msgs[0]
    if how == 'truncated':
        assert 'truncated JPEG' in msgs[0]  # OpenCV alone would decode it silently
    assert checkpoints(workspace / how / 'skip') == ['iter_1.pth', 'last_checkpoint']

    work_dir = workspace / how / 'error'
    with pytest.raises(RuntimeError) as info:
        train(workspace, monkeypatch, work_dir, *common,
              'train_dataloader.dataset.coco.dataset.on_bad_image=error')
    msg = str(info.value)
    assert bad in msg and 'Replace or delete' in msg and 'precompute_knn' in msg
    assert checkpoints(work_dir) == []


def test_precompute_knn_lists_all_unreadable_images(workspace, tmp_path):
    coco = copy_coco(workspace, 'knn_bad')
    _damage(coco / '000000000001.jpg', 'corrupt')
    _damage(coco / '000000000004.jpg', 'truncated')
    out = tmp_path / 'nns' / 'coco.npz'
    with pytest.raises(knn_tool.UnreadableImagesError) as info:
        knn_tool.main([str(coco), str(out)] + KNN_ARGS)
    msg = str(info.value)
    assert '2 of 6 images cannot be read' in msg and 'nothing written' in msg
    assert str(coco / '000000000001.jpg') in msg and str(coco / '000000000004.jpg') in msg
    assert 'Replace or delete them' in msg
    assert not out.parent.exists() or os.listdir(out.parent) == []


def test_precompute_knn_write_is_atomic(tmp_path, monkeypatch):
    """An interrupted write of the kNN file (the writer precompute_knn uses) keeps the old file
    and leaves no temporary file."""
    from cotap_mm.datasets import knn_pairs as knn_file
    out = tmp_path / 'out' / 'nns.npz'
    paths = [str(tmp_path / 'a.jpg'), str(tmp_path / 'b.jpg')]
    knn_file.write_knn_file(str(out), np.zeros((2, 2), np.int64), paths, str(tmp_path))
    before = out.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b'PK partial')
        raise KeyboardInterrupt

    monkeypatch.setattr(knn_file.np, 'savez', broken_savez)
    with pytest.raises(KeyboardInterrupt):
        knn_file.write_knn_file(str(out), np.ones((2, 2), np.int64), paths, str(tmp_path))
    assert out.read_bytes() == before and os.listdir(out.parent) == ['nns.npz']


# -- kNN files ---------------------------------------------------------------------------------

def _stego(path, nns):
    """A STEGO-format file (only ``nns``, like the released ones)."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    np.savez(path, nns=nns)
    return path


def _good_nns(workspace):
    with np.load(workspace / COCO_NNS) as f:
        return f['nns']


KNN_CASES = {
    # case: (make the file from the good rows, expected message parts)
    'wrong_length': (lambda nns: nns[:5], ['has 5 rows but the dataset has 6 images']),
    'too_few_columns': (lambda nns: nns[:, :3],
                        ['has 3 neighbour columns but 4 are needed', '--k 30']),
    'out_of_range': (lambda nns: np.where(nns == 5, 60, nns),
                     ['neighbour indices outside [0, 6)', 'max 60']),
    'other_dataset': (None, ['was computed on another image list', 'imagenet',
                             'list sha1']),
}


@pytest.mark.parametrize('case', sorted(KNN_CASES))
def test_bad_knn_file(workspace, monkeypatch, case):
    make, expected = KNN_CASES[case]
    if make is None:  # the ImageNet file (same image count) given for COCO
        nns_file = 'data/nns/nns_vit_base_imagenet1k_train_None_224.npz'
    else:
        nns_file = f'{case}.npz'
        _stego(str(workspace / nns_file), make(_good_nns(workspace)))
    work_dir = scratch(workspace, f'{case}_work')
    with pytest.raises(ValueError) as info:
        train(workspace, monkeypatch, work_dir,
              f'train_dataloader.dataset.coco.nns_file={nns_file}')
    msg = str(info.value)
    assert repr(nns_file) in msg and 'tools/precompute_knn.py' in msg
    for part in expected:
        assert part in msg, (part, msg)
    assert checkpoints(work_dir) == []


def test_knn_metadata_and_stego_files(workspace, tmp_path, monkeypatch):
    """precompute_knn records the image list; a STEGO file (no metadata) still loads, with a
    logged warning that its order cannot be verified."""
    from cotap_mm.datasets import KNNPairDataset, knn_pairs as knn_file
    from cotap_mm.datasets.image_list import image_list_digest, list_images
    with np.load(workspace / COCO_NNS) as f:
        assert int(f['num_images']) == 6
        paths = list_images(str(workspace / COCO))
        assert str(f['image_list_sha1']) == image_list_digest(paths, str(workspace / COCO))
    image_list = dict(type='ImageList', data_root=str(workspace / 'data/coco'),
                      data_prefix='train2017')
    logged = []
    monkeypatch.setattr(knn_file, 'print_log',
                        lambda msg, logger=None, level=None: logged.append((msg, level)))
    ds = KNNPairDataset(image_list, str(workspace / COCO_NNS), num_neighbors=3)
    np.testing.assert_array_equal(ds.nns, _good_nns(workspace)[:, :4])
    assert logged == []
    stego = _stego(str(tmp_path / 'stego.npz'), _good_nns(workspace))
    ds = KNNPairDataset(image_list, stego, num_neighbors=3)
    assert len(ds) == 6 and len(logged) == 1
    msg, level = logged[0]
    assert 'cannot be verified' in msg and stego in msg and level == logging.WARNING


# -- init checkpoint -------------------------------------------------------------------------

def test_init_checkpoint_with_unknown_key_layout(workspace, monkeypatch):
    """An un-converted checkpoint (timm/DINO keys under ``backbone.``) must not start a run
    from random weights (CoTAPPretrained, the init type of every config here; mmengine's
    ``Pretrained`` would only log the keys)."""
    from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
    vit = CoTAPVisionTransformer(arch='tiny', img_size=64)
    timm_like = {'backbone.' + k.replace('layers.', 'blocks.').replace('ln1', 'norm1'): v
                 for k, v in vit.state_dict().items()}
    ckpt = 'dino_timm.pth'
    torch.save(dict(state_dict=timm_like), workspace / ckpt)
    (workspace / 'tiny_init.py').write_text(
        "_base_ = './tiny.py'\nmodel = dict(backbone=dict(init_cfg=dict(_delete_=True, "
        f"type='CoTAPPretrained', checkpoint='{ckpt}', prefix='backbone.')))\n")
    work_dir = scratch(workspace, 'init_work')
    with pytest.raises(Exception) as info:
        train(workspace, monkeypatch, work_dir, config='tiny_init.py')
    msg = str(info.value)
    assert ckpt in msg and 'blocks.0' in msg and 'layers.0' in msg
    assert 'unexpected' in msg and 'missing' in msg
    assert checkpoints(work_dir) == []


# -- config typo -----------------------------------------------------------------------------

@pytest.mark.parametrize('key,value,component,suggestion', [
    ('model.inner_patch_loss.temprature', '0.1', 'InnerPatchLoss', 'temperature'),
    ('model.bank.capacty', '16', 'PrototypeBank', 'capacity'),  # a plain dict, no `type`
    ('train_dataloader.dataset.coco.num_neighbours', '3', 'KNNPairDataset', 'num_neighbors'),
])
def test_config_typo(workspace, monkeypatch, key, value, component, suggestion):
    work_dir = scratch(workspace, 'typo_work')
    with pytest.raises(train_tool.ConfigArgumentError) as info:
        train(workspace, monkeypatch, work_dir, f'{key}={value}')
    msg = str(info.value)
    bad = key.split('.')[-1]
    assert f'{component} (cotap_mm.' in msg and f'unknown argument {bad!r}' in msg
    assert f'`{key}`' in msg and f'Did you mean {suggestion!r}?' in msg
    assert 'Fix the key in the config' in msg
    assert checkpoints(work_dir) == []


# -- small image -----------------------------------------------------------------------------

def test_image_smaller_than_crop(workspace, monkeypatch):
    """Upsampled like torchvision's RandomResizedCrop (small images exist in ImageNet), with a
    warning naming the file and what to do."""
    coco, options = three_image_data(workspace, 'small')
    write_scene_image(str(coco / '000000000001.jpg'), 2, size=(24, 40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        train(workspace, monkeypatch, workspace / 'small' / 'work', *options)
    msgs = [str(w.message) for w in caught if 'smaller than the' in str(w.message)]
    assert msgs and 'small/train2017/000000000001.jpg' in msgs[0]
    assert '24x40' in msgs[0] and '64-px' in msgs[0] and 'lower size_crops' in msgs[0]
    assert checkpoints(workspace / 'small' / 'work') == ['iter_1.pth', 'last_checkpoint']


# -- NaN -------------------------------------------------------------------------------------

def test_nan_loss_stops_without_checkpoint_of_that_iteration(workspace, monkeypatch):
    """A diverging learning rate: iteration 1 is finite (saved), iteration 2 is NaN and stops
    the run naming the loss term and the iteration; nothing of iteration 2 is written."""
    work_dir = scratch(workspace, 'nan_work')
    with pytest.raises(FloatingPointError) as info:
        train(workspace, monkeypatch, work_dir, 'train_cfg.max_iters=3',
              'train_dataloader.batch_size=1',
              'optim_wrapper.optimizer.lr=1e30', 'param_scheduler=[]')
    msg = str(info.value)
    assert ('output `' in msg or 'loss term `' in msg) and 'Iter(train) [2/3]' in msg
    assert 'learning rate' in msg and '--resume' in msg
    assert checkpoints(work_dir) == ['iter_1.pth', 'last_checkpoint']
    ckpt = torch.load(work_dir / 'iter_1.pth', map_location='cpu')
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())
