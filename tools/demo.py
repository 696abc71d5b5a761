"""The embedded demo: synthetic scenes -> image-level init -> kNN -> CoTAP -> dense probes.

    python tools/demo.py [--work-dir work_dirs/demo] [--seed 0] [--preset default|mini]

Writes WORK_DIR/results.json and each stage's log in WORK_DIR/logs/. Details: docs/demo.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # the checkout

from rich.console import Console  # noqa: E402

from benchmarks.demo_chain import DemoChain  # noqa: E402
from benchmarks.demo_presets import INITS, PRESETS, prepare_work_dir  # noqa: E402
from benchmarks.demo_report import print_demo_results  # noqa: E402
from tools._common.args import positive_int  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='CoTAP demo on synthetic scenes (CPU, minutes)')
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--seed', type=int, default=0, help='seed of data, training and probes')
    p.add_argument('--preset', choices=sorted(PRESETS), default='default')
    p.add_argument('--init', choices=INITS, default='supervised',
                   help='init backbone: an 8-way image classifier trained on the ImageNet-style '
                        'scenes (default, a supervised stand-in for DINO), seeded random '
                        'weights, or a short image-level self-distillation; docs/demo.md')
    p.add_argument('--cache-dir', default='work_dirs/demo_cache',
                   help='where trained inits are kept, keyed by their config, seed and data '
                        '(a rerun with the same key skips the init training)')
    p.add_argument('--cotap-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='extra --cfg-options of the CoTAP stage (ablations), e.g. '
                        'model.loss_weights.cotap=0.')
    p.add_argument('--cotap-iters', type=positive_int, default=None,
                   help="length of the CoTAP stage (default: the preset's); the LR, weight "
                        'decay and EMA schedules follow it')
    p.add_argument('--skip-pictures', action='store_true')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    console = Console()
    prepare_work_dir(args.work_dir)
    results = DemoChain(args.work_dir, args.seed, args.preset, args.init, console,
                        args.cotap_options, args.cache_dir, args.cotap_iters)(args.skip_pictures)
    print_demo_results(results, console)
    console.print(f"results: {osp.join(args.work_dir, 'results.json')}")
    console.print(f"re-evaluate the CoTAP probe: {results['mim_test_command']}")
    return results


if __name__ == '__main__':
    main()
