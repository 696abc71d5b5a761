"""The command lines tools/dist_*.sh and tools/slurm_*.sh build (tools/launch.sh), with ``echo``
for the interpreter and a stand-in ``srun``: nothing is trained."""
import os
import os.path as osp
import subprocess

import pytest

TOOLS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools')


def _run(script, *args, env=None, tmp_path=None):
    full_env = dict(os.environ, PYTHON='echo', **(env or {}))
    full_env.pop('NNODES', None)
    if tmp_path is not None:  # a stand-in srun that prints its arguments
        srun = tmp_path / 'srun'
        srun.write_text('#!/bin/sh\necho srun "$@"\n')
        srun.chmod(0o755)
        full_env['PATH'] = f'{tmp_path}{os.pathsep}{full_env["PATH"]}'
    return subprocess.run(['bash', osp.join(TOOLS, script), *args], env=full_env,
                          capture_output=True, text=True, timeout=60)


def test_dist_single_process_keeps_positionals_before_the_launcher():
    out = _run('dist_test.sh', 'cfg.py', 'ck.pth', '1', '--out', 'a b')
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [osp.join(TOOLS, 'test.py'), 'cfg.py', 'ck.pth', '--launcher',
                                  'none', '--out', 'a', 'b']


def test_dist_torchrun_takes_the_node_environment():
    out = _run('dist_train.sh', 'cfg.py', '4', '--amp',
               env=dict(NODE_RANK='1', MASTER_ADDR='10.0.0.2', PORT='29999'))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=1', '--master_addr=10.0.0.2',
        '--nproc_per_node=4', '--master_port=29999', osp.join(TOOLS, 'train.py'), 'cfg.py',
        '--launcher', 'pytorch', '--amp']


@pytest.mark.parametrize('args', [('cfg.py', 'two'), ('cfg.py', )])
def test_dist_bad_arguments_are_refused(args):
    out = _run('dist_train.sh', *args)
    assert out.returncode == 2
    assert ('GPUS must be a non-negative integer' in out.stderr) == (len(args) == 2)


def test_slurm_train_and_test_command_lines(tmp_path):
    out = _run('slurm_train.sh', 'part', 'job', 'cfg.py', 'wd', '--amp',
               env=dict(GPUS='16', SRUN_ARGS='--time=1:00:00 --quotatype=auto'),
               tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        'srun', '-p', 'part', '--job-name=job', '--gres=gpu:8', '--ntasks=16',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1', '--time=1:00:00',
        '--quotatype=auto', 'echo', '-u', osp.join(TOOLS, 'train.py'), 'cfg.py', '--work-dir=wd',
        '--amp', '--launcher=slurm']
    out = _run('slurm_test.sh', 'part', 'job', 'cfg.py', 'ck.pth', tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-4:] == [osp.join(TOOLS, 'test.py'), 'cfg.py', 'ck.pth',
                                       '--launcher=slurm']
    assert _run('slurm_test.sh', 'part', 'job', 'cfg.py', tmp_path=tmp_path).returncode == 2
