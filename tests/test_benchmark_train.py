"""tools/benchmark_train.py on the tiny arch and what it runs (benchmarks.step_run, step_setup,
step_timing, train_report): report structure, docs section, the profiled breakdown and the plain
DINO-style baseline step (no timing assertions)."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from conftest import load_tool
import torch

from benchmarks import step_setup, step_timing
from benchmarks.report import read_section, section_markers, write_section

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
bt = load_tool('benchmark_train')
MARK_BEGIN, MARK_END = section_markers('benchmark_train')

OTHER_SECTION = ('# Benchmarks\n\n## ContinuousAPLoss\n\n<!-- benchmark_loss:start -->\n\n'
                 '| n | impl |\n|---|---|\n| 1 | dense |\n\n<!-- benchmark_loss:end -->\n')


def _images(folder, names, seed):
    rng = np.random.default_rng(seed)
    for name in names:
        img = np.full((80, 96, 3), rng.integers(0, 255, 3), np.uint8)
        cv2.circle(img, tuple(int(v) for v in rng.integers(20, 60, 2)), 15,
                   [int(c) for c in rng.integers(0, 255, 3)], -1)
        path = osp.join(folder, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        cv2.imwrite(path, img)


def _nns(image_dir, out):
    from cotap_mm.datasets.image_list import image_list_digest, list_images
    paths = list_images(image_dir)
    n = len(paths)
    nns = np.stack([(np.arange(n) + s) % n for s in range(4)], axis=1)  # self in column 0
    os.makedirs(osp.dirname(out), exist_ok=True)
    np.savez(out, nns=nns, num_images=np.int64(n),
             image_list_sha1=np.str_(image_list_digest(paths, image_dir)),
             image_dir=np.str_(image_dir))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('bench_data'))
    _images(osp.join(root, 'coco', 'train2017'), [f'{i:012d}.jpg' for i in range(5)], 0)
    _images(osp.join(root, 'imagenet', 'train'),
            [f'n0000000{c}/im{i}.JPEG' for c in range(2) for i in range(3)], 1)
    _nns(osp.join(root, 'coco', 'train2017'), osp.join(root, 'nns', 'nns_coco.npz'))
    _nns(osp.join(root, 'imagenet', 'train'), osp.join(root, 'nns', 'nns_imagenet.npz'))
    return root


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _argv(data_root, tmp_path, *extra):
    return ['--arch', 'tiny', '--batch-size', '2', '--threads', '1', '--warmup', '1',
            '--iters', '2', '--breakdown-iters', '1', '--loader-batches', '2',
            '--num-workers', '0', '--data-root', data_root, '--docs',
            str(tmp_path / 'benchmarks.md'), '--cfg-options', 'model.queue_sizes=[512,64]',
            *extra]


def test_report_json_and_docs(data_root, tmp_path, keep_threads):
    docs = tmp_path / 'benchmarks.md'
    docs.write_text(OTHER_SECTION)
    out = tmp_path / 'report.json'
    report = bt.main(_argv(data_root, tmp_path, '--out', str(out), '--update-docs'))

    # config and machine are recorded
    assert report['config']['arch'] == 'tiny' and report['config']['batch_size'] == 2
    assert report['config']['threads'] == 1 == report['machine']['torch_threads']
    # --cfg-options applied, then divided by the default world size 112 / 2
    assert report['config']['world_size'] == 56
    assert report['config']['queue_sizes'] == [512 // 56, 64 // 56]
    assert len(report['machine']['load_average']) == 3
    assert report['command'].startswith('python tools/benchmark_train.py --arch tiny')
    # timing: 2 interleaved iterations each, median <= p90, paired ratios
    for name in ('cotap', 'plain'):
        t = report['timing'][name]
        assert len(t['times_ms']) == 2 and all(x > 0 for x in t['times_ms'])
        assert t['min_ms'] <= t['median_ms'] <= t['p90_ms'] <= max(t['times_ms'])
        m = report['memory'][name]
        assert m['peak'] > 0 and 0 <= m['extra'] <= m['peak']
    assert len(report['timing']['paired_ratios']) == 2
    ratio = report['ratio']
    assert ratio['median'] == pytest.approx(report['timing']['cotap']['median_ms'] /
                                            report['timing']['plain']['median_ms'])
    # breakdown: every CoTAP component was reached, and the sections add up to the total
    bd = report['breakdown']
    for section in ('data preprocessor', 'teacher forward', 'student forward', 'sinkhorn',
                    'foreground mask', 'ranking loss', 'inner patch loss', 'cls losses',
                    'prototypes', 'entropy loss', 'queues', 'backward', 'optimizer step',
                    'teacher EMA'):
        assert bd['cotap'][section] > 0, section
    assert 'sinkhorn' not in bd['plain'] and bd['plain']['backward'] > 0
    # the plain step runs its forwards in sections of the same names
    assert bd['plain']['teacher forward'] > 0 and bd['plain']['student forward'] > 0
    for name in ('cotap', 'plain'):
        parts = sum(v for k, v in bd[name].items() if not k.startswith('total'))
        assert parts == pytest.approx(bd[name]['total (profiled)'], rel=1e-6)
    assert report['kmeans_s'] > 0
    loader = report['loader']
    assert loader['num_workers'] == 0 and loader['batches_per_s'] > 0
    assert loader['images_per_s'] == pytest.approx(loader['batches_per_s'] * 2 * 4)

    assert json.loads(out.read_text())['ratio'] == pytest.approx(ratio)
    text = docs.read_text()
    assert text.startswith(OTHER_SECTION.rstrip('\n'))  # the other section is untouched
    section = text.split(MARK_BEGIN)[1].split(MARK_END)[0]
    assert '### CPU, fp32, `--arch tiny`, batch 2, 1 thread\n' in section
    assert section.strip().startswith('### ')  # the measured settings; the prose is the docs'
    assert report['command'] in section and 'ratio CoTAP / plain' in section
    assert 'sinkhorn' in section and 'loader, 0 workers' in section

    # re-rendering the saved report rewrites the same section (one intro, one subsection)
    bt.main(['--from-json', str(out), '--update-docs', '--docs', str(docs)])
    assert docs.read_text() == text
    with pytest.raises(SystemExit, match='cannot read a report'):
        bt.main(['--from-json', str(tmp_path / 'missing.json')])


def test_docs_section_is_replaced_per_setting(tmp_path):
    docs = str(tmp_path / 'benchmarks.md')
    with open(docs, 'w') as f:
        f.write(OTHER_SECTION)
    for body in ('### `--arch tiny`, batch 2, x\n\nold tiny',
                 '### `--arch small`, batch 4, y\n\nsmall',
                 '### `--arch tiny`, batch 2, x\n\nnew tiny'):
        body = bt.merge_runs(read_section(docs, bt.SECTION), body)
        write_section(docs, bt.SECTION, body, 'Training step throughput')
    text = open(docs).read()
    assert text.count(MARK_BEGIN) == 1 and text.count(MARK_END) == 1
    assert 'old tiny' not in text and 'new tiny' in text and 'small' in text
    assert text.index('new tiny') < text.index('\nsmall')  # the first setting keeps its place
    assert '<!-- benchmark_loss:start -->' in text and not os.path.exists(docs + '.tmp')


def test_plain_step_and_breakdown_hooks_removed(data_root, keep_threads):
    import cotap_mm  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    torch.set_num_threads(1)
    args = bt.parse_args(['--arch', 'tiny', '--batch-size', '2', '--data-root', data_root])
    cfg, _ = step_setup.build_benchmark_cfg(args.config, data_root, args.arch, args.batch_size)
    batch = next(iter(step_setup.build_loader(cfg, 0, 0)))
    models, wrappers = step_setup.build_models(cfg, args.device, args.seed, args.plain_backbone)
    plain, ow = models['plain'], wrappers['plain']

    # the DINO-style loss: finite, trains the student, not the teacher; the centre moves
    data = plain.data_preprocessor(batch, True)
    loss = plain(**data, mode='loss')['loss_dino']
    assert torch.isfinite(loss) and loss > 0
    assert plain.center.abs().sum() > 0
    loss.backward()
    # the CLS path of the object-aware filter does not use its prototype kernel
    no_grad = [n for n, p in plain.backbone.named_parameters() if p.grad is None]
    assert no_grad == ['oaf.kernel']
    assert plain.cls_head.mlp[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in plain.teacher.parameters())
    ow.zero_grad()
    # same backbone as CoTAP by default (object-aware filter included)
    assert type(plain.backbone) is type(models['cotap'].backbone) and plain.backbone.with_oaf

    # the profiled iteration leaves no hook behind and patches nothing
    cotap = models['cotap']
    bd = step_timing.breakdown(cotap, wrappers['cotap'], batch, lambda: None, 'cpu', 1)
    assert bd['sinkhorn'] > 0 and bd['data preprocessor'] > 0
    for module in (cotap.backbone, cotap.teacher.module.backbone, cotap.data_preprocessor,
                   cotap.patch_head):
        assert 'forward' not in vars(module)
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert 'update_teacher' not in vars(cotap) and 'backward' not in vars(wrappers['cotap'])


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bt.parse_args(['--amp'])  # AMP needs CUDA
    assert '--amp needs --device cuda' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bt.parse_args(['--iters', '0'])
    with pytest.raises(SystemExit, match='missing nns/nns_coco.npz'):
        os.makedirs(tmp_path / 'coco')
        os.makedirs(tmp_path / 'imagenet')
        step_setup.check_benchmark_data(str(tmp_path))
    args = bt.parse_args(['--config', str(tmp_path / 'nope.py')])
    with pytest.raises(SystemExit, match='no such file'):
        step_setup.build_benchmark_cfg(args.config, str(tmp_path))


def test_oversubscription_warning(monkeypatch):
    from mmengine.logging import MMLogger
    logger = MMLogger.get_instance('test_benchmark_train_warn')
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    monkeypatch.setattr(os, 'getloadavg', lambda: (3.5, 3.0, 3.0))
    assert step_setup.warn_if_oversubscribed(2, 'cpu', logger)  # 2 threads + load 3.5 on 2 cores
    assert not step_setup.warn_if_oversubscribed(1, 'cpu', logger)  # a single thread never waits
    assert not step_setup.warn_if_oversubscribed(2, 'cuda', logger)
    monkeypatch.setattr(os, 'getloadavg', lambda: (0.1, 0.1, 0.1))
    assert not step_setup.warn_if_oversubscribed(2, 'cpu', logger)  # an idle machine
