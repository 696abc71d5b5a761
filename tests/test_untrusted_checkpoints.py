"""No entry point that reads a checkpoint runs code pickled in it without the user's opt-in: a
checkpoint whose pickle would create a file when loaded is refused (weights-only loading), with a
message naming the file, by the strict loader, CoTAPPretrained, the converters, the kNN tool, the
pictures, the probes and mmengine's loader as the Runner uses it (load_from / resume)."""
import os.path as osp
import pathlib

import pytest
import torch

import cotap_mm  # noqa: F401  (the weights-only allow-list of mmengine checkpoints)
from conftest import load_tool
from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer


class Payload:
    """Unpickling this object creates the file ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker), )


@pytest.fixture
def evil(tmp_path):
    vit = CoTAPVisionTransformer(arch='tiny', img_size=32, num_prototypes=4)
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in vit.state_dict().items()},
                    meta=dict(arch='tiny'), payload=Payload(marker)), path)
    assert not marker.exists()
    return str(path), marker


def _refused(call, marker, path):
    with pytest.raises(Exception) as err:
        call()
    assert not marker.exists(), 'the pickled payload ran'
    assert osp.basename(path) in str(err.value) or 'weights_only' in str(err.value).lower() \
        or 'weights only' in str(err.value).lower()
    return str(err.value)


def test_package_loaders_refuse(evil):
    path, marker = evil
    from cotap_mm.converters import convert_checkpoint, extract_backbone
    from cotap_mm.models.utils import CoTAPPretrained, load_backbone_weights
    msg = _refused(lambda: load_backbone_weights(
        CoTAPVisionTransformer(arch='tiny', img_size=32, num_prototypes=4), path), marker, path)
    assert '--unsafe-pickle' in msg
    _refused(lambda: CoTAPPretrained(checkpoint=path, prefix='backbone.')(
        CoTAPVisionTransformer(arch='tiny', img_size=32, num_prototypes=4)), marker, path)
    _refused(lambda: convert_checkpoint(path, 'dino'), marker, path)
    _refused(lambda: extract_backbone(path), marker, path)
    # the opt-in runs it: the test's payload is real
    load_backbone_weights(CoTAPVisionTransformer(arch='tiny', img_size=32, num_prototypes=4),
                          path, unsafe_pickle=True)
    assert marker.exists()


def test_runner_loading_refuses(evil):
    """mmengine's loader (Runner ``load_from`` / ``resume``, ``init_cfg=Pretrained``) runs
    weights-only on this torch, with cotap_mm's allow-list only."""
    path, marker = evil
    from mmengine.runner.checkpoint import _load_checkpoint
    _refused(lambda: _load_checkpoint(path, map_location='cpu'), marker, path)


def test_tools_refuse(evil, tmp_path):
    path, marker = evil
    images = tmp_path / 'images'
    images.mkdir()
    from PIL import Image
    for i in range(3):
        Image.new('RGB', (40, 40), (60 * i, 20, 90)).save(images / f'{i}.png')
    knn = load_tool('precompute_knn')
    _refused(lambda: knn.main([str(images), str(tmp_path / 'nns.npz'), '--checkpoint', path,
                               '--k', '2', '--image-size', '32', '--num-workers', '0',
                               '--device', 'cpu']), marker, path)
    assert not (tmp_path / 'nns.npz').exists()
    # the opt-in flag the message names exists and loads it (the payload then runs)
    knn.main([str(images), str(tmp_path / 'nns.npz'), '--checkpoint', path, '--unsafe-pickle',
              '--k', '2', '--image-size', '32', '--num-workers', '0', '--device', 'cpu'])
    assert marker.exists() and (tmp_path / 'nns.npz').exists()
    marker.unlink()
    cfg = tmp_path / 'tiny.py'
    cfg.write_text("model = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, "
                   "img_size=32, num_prototypes=4)\n")
    visualize = load_tool('visualize')
    _refused(lambda: visualize.main([str(cfg), path, str(images), '--out-dir',
                                     str(tmp_path / 'pics'), '--size', '32', '--device', 'cpu']),
             marker, path)
    from tools._common.probes import load_model_for_tool
    from types import SimpleNamespace
    args = SimpleNamespace(config=str(cfg), cfg_options=None, checkpoint=path, prefix=None)
    from mmengine.logging import MMLogger
    _refused(lambda: load_model_for_tool(args, 'featmap', MMLogger.get_current_instance()),
             marker, path)
