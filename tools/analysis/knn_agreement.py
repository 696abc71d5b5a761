"""How much the kNN pairs of the synthetic pretraining scenes share their classes: the mean
Jaccard index of the class sets of an image and each neighbour, against random pairs.

    python tools/analysis/knn_agreement.py DATA_ROOT [--nns-dir DATA_ROOT/nns] [--write-oracle K]

Details: docs/demo.md, "Levers" (Do the kNN pairs share classes?).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # checkout

from cotap_mm.evaluation.knn_agreement import (SUBSET_FOLDERS, synthetic_knn_agreement,  # noqa
                                               write_oracle_knn_file)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data_root', help='folder written by tools/make_synthetic_scenes.py')
    p.add_argument('--nns-dir', help='folder of nns_{coco,imagenet}.npz (default: DATA_ROOT/nns)')
    p.add_argument('--seed', type=int, default=0, help='seed of the random pairs')
    p.add_argument('--write-oracle', type=int, metavar='K',
                   help='also write the oracle kNN files (K neighbours) and measure them')
    args = p.parse_args(argv)
    if not osp.isfile(osp.join(args.data_root, 'meta.json')):
        p.error(f'DATA_ROOT {args.data_root!r} has no meta.json: not a synthetic-scenes folder')
    nns_dir = args.nns_dir or osp.join(args.data_root, 'nns')
    out = {}
    for subset in SUBSET_FOLDERS:
        files = {subset: osp.join(nns_dir, f'nns_{subset}.npz')}
        if args.write_oracle:
            files[f'{subset}_oracle'] = write_oracle_knn_file(
                args.data_root, subset, osp.join(nns_dir, f'nns_{subset}_oracle.npz'),
                args.write_oracle, args.seed)
        for name, nns in files.items():
            if not osp.isfile(nns):
                p.error(f'no kNN file {nns!r}; run tools/precompute_knn.py first')
            out[name] = synthetic_knn_agreement(args.data_root, subset, nns, args.seed)
            for kind, a in out[name].items():
                print(f"{name:<16} {kind:<7} kNN pairs {a['knn']:.3f}  random pairs "
                      f"{a['random']:.3f}  ratio {a['ratio']:.2f}  ({a['pairs']} pairs)")
    print(json.dumps(out))
    return out


if __name__ == '__main__':
    main()
