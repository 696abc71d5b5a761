"""The one strict backbone loader (cotap_mm.models.utils.loading): which keys it takes, what it
tolerates, what it refuses and what the message says."""
import pytest
import torch

from cotap_mm.models.backbones.cotap_vit import CoTAPVisionTransformer
from cotap_mm.models.utils.loading import (BackboneWeightsError, load_backbone_weights,
                                           select_backbone_state)


class Hyper:
    """A Python object in a checkpoint (as Lightning stores hyper-parameters)."""


def _vit(**kw):
    return CoTAPVisionTransformer(arch='tiny', img_size=32, num_prototypes=4, **kw)


def test_oaf_keys_dropped_for_a_plain_vit_and_bare_dict_checked(tmp_path):
    src = _vit(with_oaf=True)
    ckpt = tmp_path / 'ckpt.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in src.state_dict().items()},
                    meta=dict(epoch=1)), ckpt)
    dst = _vit(with_oaf=False, out_type='raw')
    info = load_backbone_weights(dst, str(ckpt))  # oaf.* not used by a plain ViT
    torch.testing.assert_close(dst.state_dict()['pos_embed'], src.state_dict()['pos_embed'])
    assert info['meta'] == dict(epoch=1) and info['prefix'] == 'backbone.'
    assert info['dropped'] and all(k.startswith('oaf.') for k in info['dropped'])
    # a bare backbone state dict (no prefix) is taken whole, and checked strictly
    bare = {k: v for k, v in src.state_dict().items() if not k.startswith('layers.1.')}
    bare['extra.weight'] = torch.zeros(1)
    torch.save(bare, tmp_path / 'bad.pth')
    with pytest.raises(KeyError, match=r"(?s)unexpected keys: \['extra.weight'\].*"
                                       r"missing keys .*\['layers.1"):
        load_backbone_weights(dst, str(tmp_path / 'bad.pth'))


def test_student_teacher_and_explicit_prefix(tmp_path):
    student, teacher = _vit(), _vit()
    state = {'backbone.' + k: v for k, v in student.state_dict().items()}
    state.update({'teacher.module.backbone.' + k: v for k, v in teacher.state_dict().items()})
    state['patch_head.weight'] = torch.zeros(1)
    ckpt = dict(state_dict=state)
    for which, net in (('student', student), ('teacher', teacher)):
        sd, prefix = select_backbone_state(ckpt, 'x.pth', which=which)
        assert set(sd) == set(net.state_dict()) and torch.equal(sd['cls_token'], net.cls_token)
    with pytest.raises(BackboneWeightsError, match="no key starts with 'model.'"):
        select_backbone_state(ckpt, 'x.pth', prefix='model')
    only_student = dict(state_dict={'backbone.' + k: v for k, v in student.state_dict().items()})
    with pytest.raises(KeyError, match='--which student'):
        select_backbone_state(only_student, 'x.pth', which='teacher')


def test_mismatches_and_allow_missing(tmp_path):
    src = _vit(with_oaf=False)
    path = tmp_path / 'plain.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in src.state_dict().items()}), path)
    with pytest.raises(BackboneWeightsError) as err:  # the OAF is missing from the file
        load_backbone_weights(_vit(), str(path))
    assert "'oaf.kernel'" in str(err.value) and 'with_oaf=False' in str(err.value)
    dst = _vit()
    kernel = dst.oaf.kernel.detach().clone()
    info = load_backbone_weights(dst, str(path), allow_missing=('oaf.', ))
    assert 'oaf.kernel' in info['allowed_missing'] and torch.equal(dst.oaf.kernel, kernel)
    # another grid: pos_embed is resized by the load hook; another width is a mismatch
    load_backbone_weights(CoTAPVisionTransformer(arch='tiny', img_size=64, with_oaf=False),
                          str(path))
    wide = CoTAPVisionTransformer(arch='small', img_size=32, with_oaf=False)
    with pytest.raises(BackboneWeightsError, match='shape mismatches'):
        load_backbone_weights(wide, str(path))


def test_pickled_checkpoint_needs_opt_in(tmp_path):
    import argparse

    src = _vit(with_oaf=False)
    path = tmp_path / 'pickled.pth'
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in src.state_dict().items()},
                    meta=dict(args=argparse.Namespace(a=1)), hyper=Hyper()), path)
    with pytest.raises(ValueError, match='--unsafe-pickle'):
        load_backbone_weights(_vit(with_oaf=False), str(path))
    load_backbone_weights(_vit(with_oaf=False), str(path), unsafe_pickle=True)
