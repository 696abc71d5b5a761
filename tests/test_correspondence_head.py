"""CorrespondenceHead: the CoTAP lists, every switch, and the global list over two ranks."""
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from cotap_mm.models.heads import CorrespondenceHead, draw_negative_maps, select_regions
from cotap_mm.models.losses import continuous_ap_loss
from cotap_mm.models.utils.crop_layout import split_halves
from cotap_mm.registry import MODELS


def make_batch(B=3, G=2, C=6, h=4, w=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(2 * G * B, C, h, w, generator=gen)
    teacher = student + 0.3 * torch.randn(2 * G * B, C, h, w, generator=gen)
    masks = (torch.rand(2 * G * B, 1, h, w, generator=gen) < 0.4).float()
    return student, teacher, masks


def loop_lists(student, teacher, masks, B, G, ks, k, perms):
    """Straightforward per-item construction of one scale's lists (aligned masks)."""
    def cells(x, half, b):  # (G * ks * ks, C) for image b of a half, crop 0 first
        rows = [F.adaptive_avg_pool2d(x[half * G * B + c * B + b][None], ks)[0]
                .flatten(1).t() for c in range(G)]
        return torch.cat(rows)

    def pick(half, b):
        m = torch.cat([F.adaptive_avg_pool2d(masks[half * G * B + c * B + b][None], ks)[0]
                       .flatten() for c in range(G)])
        return sorted(range(len(m)), key=lambda i: (-m[i].item(), i))[:k]

    def unit(x):
        return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-5)

    preds, targets, labels = [], [], []
    for b in range(B):
        partners = [b] + [int(p[b]) for p in perms]
        for r, q in enumerate(partners):
            for net, out in ((student, preds), (teacher, targets)):
                a = unit(cells(net, 0, b)[pick(0, b)])
                c = unit(cells(net, 1, q)[pick(1, q)])
                out.append((a @ c.t()).flatten())
            labels += [r == 0] * (k * k)
    return torch.cat(preds), torch.cat(targets), torch.tensor(labels)


@pytest.mark.parametrize('sampler', ['derangement', 'super_perm'])
def test_lists_and_loss_match_a_loop_implementation(sampler):
    B, G, k, R = 3, 2, 3, 2
    student, teacher, masks = make_batch(B, G)
    head = CorrespondenceHead(pool_sizes=(2, 4), topk=k, num_neg_draws=R, neg_sampler=sampler,
                              topk_tie_break='lowest_index', seed=5)
    gen = torch.Generator().manual_seed(5)
    expected = []
    for ks in (2, 4):
        perms = draw_negative_maps(B, R, sampler, gen)
        pred, target, labels = loop_lists(student, teacher, masks, B, G, ks, k, perms)
        assert pred.numel() == B * (1 + R) * k * k
        expected.append(continuous_ap_loss(pred, target, labels))
    loss = head.loss(student, teacher, masks)
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-6, atol=1e-7)


def test_builds_from_config_and_gradient_reaches_the_student_only():
    head = MODELS.build(dict(type='CorrespondenceHead', pool_sizes=[7, 14],
                             loss=dict(type='ContinuousAPLoss', impl='sorted')))
    student, teacher, masks = make_batch(B=4, C=16, h=14, w=14)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss = head(student, teacher, masks)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert student.grad.abs().sum() > 0 and teacher.grad is None


def test_fp16_similarities_round_like_an_fp16_matmul():
    """similarity_dtype='float16': the lists are fp16 cosines of fp16-rounded unit features
    (ties appear), the loss stays finite and trains the student."""
    student, teacher, masks = make_batch(B=4, C=16, h=8, w=8)
    kwargs = dict(pool_sizes=(4, ), topk=5, num_neg_draws=2, topk_tie_break='lowest_index')
    lists = {}
    for dtype in ('float32', 'float16'):
        head = CorrespondenceHead(similarity_dtype=dtype, seed=3, **kwargs)
        lists[dtype] = head.build_lists(student, teacher, masks, 4)
    pred32, target32, labels32 = lists['float32']
    pred16, target16, labels16 = lists['float16']
    assert pred16.dtype == target16.dtype == torch.float16 and pred32.dtype == torch.float32
    assert torch.equal(labels16, labels32)
    # rounding error of fp16 operands and result, not another list
    torch.testing.assert_close(pred16.float(), pred32, atol=2e-3, rtol=0)
    assert not torch.equal(pred16.float(), pred32)
    assert pred16.unique().numel() < pred32.unique().numel()  # fp16 creates ties
    student.requires_grad_(True)
    loss = CorrespondenceHead(similarity_dtype='float16', seed=3, **kwargs)(student, teacher,
                                                                             masks)
    loss.backward()
    assert torch.isfinite(loss) and student.grad.abs().sum() > 0


def test_float32_lists_stay_float32_under_autocast():
    """similarity_dtype='float32' is not overridden by mixed precision (AmpOptimWrapper runs the
    loss under autocast, which would otherwise compute the cosines in low precision)."""
    student, teacher, masks = make_batch(B=4, C=16, h=8, w=8)
    kwargs = dict(pool_sizes=(4, ), topk=5, num_neg_draws=2, topk_tie_break='lowest_index')
    plain = CorrespondenceHead(seed=3, **kwargs).build_lists(student, teacher, masks, 4)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = CorrespondenceHead(seed=3, **kwargs).build_lists(student, teacher, masks, 4)
    assert amp[0].dtype == torch.float32
    torch.testing.assert_close(amp[0], plain[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(amp[1], plain[1], atol=1e-6, rtol=0)


def test_aligned_masks_are_each_images_own():
    B, G, h = 4, 2, 3
    masks = torch.arange(2 * G * B, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, h, h)
    head = CorrespondenceHead(num_crops=G)
    per_image = head._masks_per_image(masks)  # (2, B, G, h, w); value = flat index
    for half in range(2):
        for b in range(B):
            for c in range(G):
                assert per_image[half, b, c, 0, 0] == half * G * B + c * B + b


def test_as_coded_masks_reproduce_the_released_table():
    # docs/method.md §1.2, B = 4: row 0 crop 1 uses (crop 0, img 1); row 2 crop 0 uses (crop 1, img 0)
    B, G = 4, 2
    masks = torch.arange(2 * G * B, dtype=torch.float32).view(-1, 1, 1, 1)
    per_image = CorrespondenceHead(mask_alignment='as_coded')._masks_per_image(masks)
    table = {(0, 0): (0, 0), (0, 1): (0, 1), (1, 0): (0, 2), (1, 1): (0, 3), (2, 0): (1, 0),
             (2, 1): (1, 1), (3, 0): (1, 2), (3, 1): (1, 3)}
    for half in range(2):
        for (row, crop), (src_crop, src_img) in table.items():
            assert per_image[half, row, crop, 0, 0] == half * G * B + src_crop * B + src_img


def test_region_selection_follows_the_own_mask():
    B, G, h = 2, 2, 4
    student, teacher, _ = make_batch(B, G, h=h, w=h)
    masks = torch.zeros(2 * G * B, 1, h, h)
    masks[1 * B + 0, 0, 2, 3] = 1  # u image 0, crop 1, cell (2, 3)
    head = CorrespondenceHead(pool_sizes=(4, ), topk=1, topk_tie_break='lowest_index')
    maps = torch.stack([split_halves(student, G), split_halves(teacher, G)])
    _, index = head._regions(maps, head._masks_per_image(masks), 4)
    assert index[0, 0, 0] == 16 + 2 * 4 + 3  # crop 1's cells follow crop 0's 16 cells


def test_tie_breaks():
    cells = torch.tensor([[0.5, 1.0, 1.0, 0.0, 1.0, 1.0]])
    assert select_regions(cells, 3, 'lowest_index').tolist() == [[1, 2, 4]]
    gen = torch.Generator().manual_seed(0)
    picks = {tuple(sorted(select_regions(cells, 3, 'random', gen)[0].tolist()))
             for _ in range(30)}
    assert len(picks) > 1 and all(set(p) <= {1, 2, 4, 5} for p in picks)


@pytest.mark.parametrize('B', [2, 3, 28])
def test_negative_samplers(B):
    gen = torch.Generator().manual_seed(B)
    der = draw_negative_maps(B, 50, 'derangement', gen)
    assert (der != torch.arange(B)).all()
    assert (der.sort(-1).values == torch.arange(B)).all()  # permutations
    sup = draw_negative_maps(B, 200, 'super_perm', gen)
    assert (sup != torch.arange(B)).all() and sup.min() >= 0 and sup.max() < B
    if B == 28:  # the released map repeats items in most draws (docs/method.md §1.3)
        repeats = (sup.sort(-1).values != torch.arange(B)).any(-1).float().mean()
        assert 0.4 < repeats < 0.85
    assert draw_negative_maps(1, 3, 'derangement').tolist() == [[0], [0], [0]]


@pytest.mark.parametrize('kwargs,match', [
    (dict(mask_alignment='intended'), '`mask_alignment`'),
    (dict(neg_sampler='random'), '`neg_sampler`'),
    (dict(topk_tie_break='first'), '`topk_tie_break`'),
    (dict(list_scope='world'), '`list_scope`'),
    (dict(similarity_dtype='bfloat16'), '`similarity_dtype`'),
    (dict(pool_sizes=()), '`pool_sizes`'),
    (dict(topk=0), '`topk`'),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorrespondenceHead(**kwargs)


def test_bad_shapes():
    head = CorrespondenceHead()
    student, teacher, masks = make_batch(B=2)
    with pytest.raises(ValueError, match='2 \\* num_crops \\* B'):
        head(student[:7], teacher[:7], masks[:7])
    with pytest.raises(ValueError, match='`fg_masks` must have shape'):
        head(student, teacher, masks[:, :, :2])


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _global_worker(rank, world, port, out_dir):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        B, G = 4, 2
        student, teacher, masks = make_batch(B * world, G, seed=1)

        def shard(x):  # this rank's items, in the same (half, crop, item) layout
            x = x.view(2, G, B * world, *x.shape[1:])[:, :, rank * B:(rank + 1) * B]
            return x.reshape(-1, *x.shape[3:])

        local = shard(student).clone().requires_grad_(True)
        head = CorrespondenceHead(pool_sizes=(2, 4), topk=3, num_neg_draws=3,
                                  topk_tie_break='lowest_index', list_scope='global',
                                  seed=rank * 100)  # rank 0's draws win
        loss = head(local, shard(teacher), shard(masks))
        loss.backward()
        torch.save(dict(loss=loss.detach(), grad=local.grad), f'{out_dir}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


def test_global_list_over_two_ranks_equals_one_process(tmp_path):
    import torch.multiprocessing as mp
    world, B, G = 2, 4, 2
    mp.spawn(_global_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world)
    student, teacher, masks = make_batch(B * world, G, seed=1)
    student.requires_grad_(True)
    head = CorrespondenceHead(pool_sizes=(2, 4), topk=3, num_neg_draws=3,
                              topk_tie_break='lowest_index', seed=0)
    loss = head(student, teacher, masks)
    loss.backward()
    full_grad = student.grad.view(2, G, B * world, *student.shape[1:])
    for rank in range(world):
        out = torch.load(f'{tmp_path}/rank{rank}.pt')
        torch.testing.assert_close(out['loss'], loss.detach(), rtol=1e-6, atol=1e-7)
        grad = out['grad'].view(2, G, B, *student.shape[1:])
        # the all-gather's backward sums the ranks' identical losses: world x the gradient
        torch.testing.assert_close(grad, world * full_grad[:, :, rank * B:(rank + 1) * B],
                                   rtol=1e-5, atol=1e-7)
