"""The CoTAP algorithm on synthetic crops: losses, queues, k-means trigger, teacher EMA."""
import math

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample

from cotap_mm.models import CoTAP
from cotap_mm.models.utils import CoTAPTeacherEMA, teacher_momentum

B, G, L, S_G, S_L = 2, 2, 4, 64, 32
V = G + L


def tiny_cotap(**overrides):
    cfg = dict(
        backbone=dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, img_size=S_G,
                      num_prototypes=4),
        patch_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=16,
                        hidden_channels=32, bottleneck_channels=8),
        cls_head=dict(type='CoTAPProjectionHead', in_channels=128, num_prototypes=24,
                      hidden_channels=32, bottleneck_channels=8),
        correspondence_head=dict(type='CorrespondenceHead', pool_sizes=(2, 4), topk=3,
                                 num_neg_draws=1),
        bank=dict(capacity=8, num_insert=2, kmeans_iters=20),
        queue_sizes=(64, 32),
        queue_inserts=(16, 4),
        data_preprocessor=dict(type='SelfSupDataPreprocessor'))
    cfg.update(overrides)
    return CoTAP(**cfg)


def synthetic_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    views = []
    for _subset in range(2):
        for _half in range(2):
            for crop in range(V):
                size = S_G if crop < G else S_L
                views.append(torch.randn(B, 3, size, size, generator=gen))
    sizes = [S_G] * G + [S_L] * L
    full = lambda s: [0., 0., float(s), float(s)]  # noqa: E731
    gc = torch.tensor([[full(S_G) for _ in range(V)] for _ in range(G)])  # (G, V, 4)
    all_ = torch.tensor([[full(sizes[k]) for _ in range(G)] for k in range(V)])  # (V, G, 4)
    samples = []
    for _ in range(B):
        s = DataSample()
        s.set_field(gc.expand(2, 2, G, V, 4).numpy(), 'bbox_gc')
        s.set_field(all_.expand(2, 2, V, G, 4).numpy(), 'bbox_all')
        samples.append(s)
    return dict(student=views, teacher=[v.clone() for v in views]), samples


@pytest.fixture(autouse=True)
def _max_iters():
    MessageHub.get_current_instance().update_info('max_iters', 10)
    MessageHub.get_current_instance().update_info('iter', 0)


def test_two_steps_losses_queues_and_kmeans():
    torch.manual_seed(0)
    model = tiny_cotap()
    model.update_teacher()  # what TeacherEMAHook.before_train does
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                           lr=1e-4))
    kernel_before = model.backbone.oaf.kernel.detach().clone()
    inputs, samples = synthetic_batch()
    losses = model.loss(inputs, samples)
    assert set(losses) == {f'loss_{k}' for k in
                           ('inner_patch', 'inner_cls', 'cotap', 'intra_cls', 'entropy')}
    assert all(torch.isfinite(v) for v in losses.values())
    # step 0: empty queues, so the code losses are zero (docs/method.md §3.2); CoTAP and entropy are on
    assert losses['loss_inner_patch'] == 0 and losses['loss_inner_cls'] == 0
    assert losses['loss_cotap'] > 0
    # the bank (capacity 8) took the 2 G B = 8 ImageNet global layouts and k-means fired
    assert bool(model.bank.initialized)
    assert not torch.equal(kernel_before, model.backbone.oaf.kernel)
    assert model.cls_queue.num_filled == 2 * G * B and not model.patch_queue.is_empty
    optim.update_params(sum(losses.values()))
    model.update_teacher()

    losses = model.loss(*synthetic_batch(seed=1))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_inner_patch'] > 0 and losses['loss_inner_cls'] > 0
    assert losses['loss_intra_cls'] > 0
    # the codes' entropy is logged (uniform codes, log K, would teach the code losses nothing)
    import math
    from mmengine.logging import MessageHub
    scalars = MessageHub.get_current_instance().log_scalars
    for name, head in (('patch', model.patch_head), ('cls', model.cls_head)):
        entropy = scalars[f'train/code_entropy_{name}'].current()
        K = head.prototypes.weight.shape[0]
        assert 0 < entropy <= math.log(K) + 1e-6, (name, entropy, K)
    total = sum(losses.values())
    total.backward()
    assert model.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.backbone.oaf.kernel.grad.abs().sum() > 0  # from the entropy loss only
    assert all(p.grad is None for p in model.teacher.parameters())


def test_loss_weights_and_unknown_terms():
    model = tiny_cotap(loss_weights=dict(cotap=0.0))
    model.update_teacher()
    losses = model.loss(*synthetic_batch())
    assert losses['loss_cotap'] == 0
    with pytest.raises(ValueError, match='unknown `loss_weights` keys'):
        tiny_cotap(loss_weights=dict(cotap_loss=1.0))


def test_non_finite_loss_names_the_term_and_iteration(monkeypatch):
    model = tiny_cotap()
    model.update_teacher()
    MessageHub.get_current_instance().update_info('iter', 7)
    monkeypatch.setattr(model.entropy_loss, 'forward', lambda k, b: torch.tensor(float('nan')))
    with pytest.raises(FloatingPointError, match='`entropy`.*iteration 7'):
        model.loss(*synthetic_batch())


def test_teacher_kernel_sync():
    model = tiny_cotap(teacher_kernel_sync=True)
    model.update_teacher()
    model.loss(*synthetic_batch())  # k-means fires on this step
    assert torch.equal(model.teacher.module.backbone.oaf.kernel, model.backbone.oaf.kernel)
    lagging = tiny_cotap(teacher_kernel_sync=False)
    lagging.update_teacher()
    lagging.loss(*synthetic_batch())
    assert not torch.equal(lagging.teacher.module.backbone.oaf.kernel,
                           lagging.backbone.oaf.kernel)


def test_teacher_ema_schedule():
    assert teacher_momentum(0, 100) == pytest.approx(0.9997)
    assert teacher_momentum(100, 100) == pytest.approx(0.9999)
    assert teacher_momentum(50, 100) == pytest.approx(0.9998)
    student = torch.nn.Linear(2, 2)
    ema = CoTAPTeacherEMA(student, total_steps=10)
    ema.update_parameters(student)  # first call copies
    assert torch.equal(ema.module.weight, student.weight)
    old = ema.module.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    ema.update_parameters(student)  # steps == 1: m(1)
    m = teacher_momentum(1, 10)
    torch.testing.assert_close(ema.module.weight, m * old + (1 - m) * student.weight)
    assert math.isclose(ema.current_momentum(10), 0.9999)


def test_missing_init_checkpoint_fails_at_start_up(tmp_path):
    backbone = dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, img_size=S_G,
                    num_prototypes=4,
                    init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'missing.pth'),
                                  prefix='backbone.'))
    model = tiny_cotap(backbone=backbone)
    with pytest.raises(FileNotFoundError, match='missing.pth.*init_cfg=None'):
        model.init_weights()


def test_without_oaf_trains_on_plain_tokens():
    """with_oaf=False (an image-level init, the w/o-OAF ablation): D-wide heads, no bank, no
    entropy term, and the code losses still train the backbone."""
    model = tiny_cotap(
        backbone=dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=16, img_size=S_G,
                      with_oaf=False, final_norm=True),
        patch_head=dict(type='CoTAPProjectionHead', in_channels=64, num_prototypes=16,
                        hidden_channels=32, bottleneck_channels=8),
        cls_head=dict(type='CoTAPProjectionHead', in_channels=64, num_prototypes=24,
                      hidden_channels=32, bottleneck_channels=8))
    assert model.bank is None and not hasattr(model.backbone, 'oaf')
    inputs, samples = synthetic_batch()
    model.loss(inputs, samples)  # first step fills the queues
    losses = model.loss(*synthetic_batch(seed=1))
    assert float(losses['loss_entropy']) == 0.0
    assert all(math.isfinite(float(v)) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    assert model.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('patch_size', [16, 8])
def test_inner_patch_loss_takes_the_backbone_patch_size(patch_size):
    """The crop boxes are divided by the backbone's patch size (8 for ViT-B/8 and the demo ViT)."""
    model = tiny_cotap(backbone=dict(type='CoTAPVisionTransformer', arch='tiny',
                                     patch_size=patch_size, img_size=S_G, num_prototypes=4))
    assert model.inner_patch_loss.patch_size == patch_size
    # a consistent explicit value is accepted
    model = tiny_cotap(backbone=dict(type='CoTAPVisionTransformer', arch='tiny',
                                     patch_size=patch_size, img_size=S_G, num_prototypes=4),
                       inner_patch_loss=dict(type='InnerPatchLoss', patch_size=patch_size))
    assert model.inner_patch_loss.patch_size == patch_size


def test_inner_patch_loss_patch_size_mismatch_is_refused():
    with pytest.raises(ValueError, match=r'inner_patch_loss.patch_size=16.*backbone.patch_size=8'):
        tiny_cotap(backbone=dict(type='CoTAPVisionTransformer', arch='tiny', patch_size=8,
                                 img_size=S_G, num_prototypes=4),
                   inner_patch_loss=dict(type='InnerPatchLoss', patch_size=16))



def test_heads_warmup_keeps_the_backbone_still():
    """heads_warmup_iters: no gradient reaches the student backbone's ViT before it, the heads
    (and the OAF kernel, through the entropy term) still train; afterwards the backbone does."""
    model = tiny_cotap(heads_warmup_iters=2)
    hub = MessageHub.get_current_instance()
    model.loss(*synthetic_batch())  # fills the queues
    hub.update_info('iter', 1)
    sum(model.loss(*synthetic_batch(seed=1)).values()).backward()
    assert model.backbone.layers[0].attn.qkv.weight.grad is None
    assert model.patch_head.mlp[0].weight.grad.abs().sum() > 0
    assert model.backbone.oaf.kernel.grad.abs().sum() > 0
    model.zero_grad()
    hub.update_info('iter', 2)
    sum(model.loss(*synthetic_batch(seed=2)).values()).backward()
    assert model.backbone.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='heads_warmup_iters'):
        tiny_cotap(heads_warmup_iters=-1)


def test_crop_count_is_set_once_and_checked():
    """model.num_crops is the one crop count: the correspondence head takes its G (another value
    is refused at build time) and a batch with another crop count is refused at the first step."""
    model = tiny_cotap()
    assert model.correspondence_head.num_crops == G
    with pytest.raises(ValueError, match=r'correspondence_head.num_crops=3.*num_crops\[0\]=2'):
        tiny_cotap(correspondence_head=dict(type='CorrespondenceHead', pool_sizes=(2, 4), topk=3,
                                            num_neg_draws=1, num_crops=3))
    inputs, samples = synthetic_batch()
    model = tiny_cotap(num_crops=(G, L + 1))
    with pytest.raises(ValueError, match=rf'num_crops=\({G}, {L + 1}\).*gives {G + L:g} crops'):
        model.loss(inputs, samples)


def test_profiler_sees_the_step_sections():
    """Each part of the step runs under a 'cotap::' record_function: the seam profilers and the
    step benchmark measure the algorithm through."""
    from torch.profiler import ProfilerActivity, profile
    model = tiny_cotap()
    model.update_teacher()
    model.loss(*synthetic_batch())  # fills the queues: the next step has every part
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.loss(*synthetic_batch(seed=1))
    names = {e.name for e in prof.events() if e.name.startswith('cotap::')}
    assert names == {f'cotap::{part}' for part in (
        'teacher forward', 'foreground mask', 'student forward', 'prototypes', 'sinkhorn',
        'inner patch loss', 'cls losses', 'ranking loss', 'entropy loss', 'queues')}
