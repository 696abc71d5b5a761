"""cotap_mm/evaluation/knn_agreement.py: the classes an image shares with its kNN
neighbours, against random pairs."""
import numpy as np
import pytest

from cotap_mm.evaluation.knn_agreement import neighbour_class_agreement, oracle_neighbours


def test_neighbours_of_the_same_classes_agree_fully():
    # two groups of images with disjoint classes; each image's neighbours are in its group
    sets = [(0, 1)] * 4 + [(2, 3)] * 4
    nns = np.array([[i] + [j for j in range(8) if j // 4 == i // 4 and j != i][:2]
                    for i in range(8)])
    a = neighbour_class_agreement(nns, sets, seed=0)
    assert a['knn'] == 1.0 and a['pairs'] == 16
    assert 0.0 < a['random'] < 1.0 and a['ratio'] == pytest.approx(1.0 / a['random'])
    # neighbours across the groups share nothing
    across = np.array([[i, (i + 4) % 8] for i in range(8)])
    assert neighbour_class_agreement(across, sets)['knn'] == 0.0


def test_jaccard_and_class_subset():
    sets = [(0, 5), (0, 6), (1, 5)]
    nns = np.array([[0, 1], [1, 0], [2, 0]])
    # pairs (0,1): {0} of {0,5,6}; (1,0): the same; (2,0): {5} of {0,1,5}
    assert neighbour_class_agreement(nns, sets)['knn'] == pytest.approx(1 / 3)
    # things only (classes 0-1): (0,1) 1, (1,0) 1, (2,0) 0
    assert neighbour_class_agreement(nns, sets, classes=(0, 1))['knn'] == pytest.approx(2 / 3)


def test_random_pairs_never_pair_an_image_with_itself():
    sets = [(i, ) for i in range(50)]  # every image its own class: only self-pairs would agree
    nns = np.stack([np.arange(50), (np.arange(50) + 1) % 50], 1)
    assert neighbour_class_agreement(nns, sets, seed=3)['random'] == 0.0


def test_oracle_picks_the_images_with_the_most_classes_in_common():
    sets = [(0, 1), (0, 1), (0, 2), (3, ), (3, ), (0, 1, 2)]
    nns = oracle_neighbours(sets, 2, seed=0)
    assert nns.shape == (6, 3) and nns.dtype == np.int64 and (nns[:, 0] == np.arange(6)).all()
    assert (nns[:, 1:] != np.arange(6)[:, None]).all()  # never the image itself
    assert nns[0, 1] == 1 and nns[1, 1] == 0 and nns[3, 1] == 4 and nns[4, 1] == 3
    assert set(nns[5, 1:]) <= {0, 1, 2}  # Jaccard 2/3 each: a random two of them
    assert neighbour_class_agreement(nns, sets)['knn'] > neighbour_class_agreement(
        np.array([[i, (i + 3) % 6, (i + 2) % 6] for i in range(6)]), sets)['knn']
    with pytest.raises(ValueError, match='k=6'):
        oracle_neighbours(sets, 6)


def test_bad_shapes_name_the_layout():
    with pytest.raises(ValueError, match='column 0'):
        neighbour_class_agreement(np.zeros((3, 1), int), [(0, )] * 3)
    with pytest.raises(ValueError, match='N=2'):
        neighbour_class_agreement(np.zeros((3, 2), int), [(0, )] * 2)


def test_tool_on_generated_scenes(tmp_path, capsys):
    import os.path as osp

    from conftest import load_tool

    from cotap_mm.datasets import synthetic
    from cotap_mm.datasets.image_list import list_images
    from cotap_mm.datasets.knn_pairs import write_knn_file
    data = str(tmp_path / 'data')
    synthetic.write_synthetic_dataset(data, seed=1, size=32, num_coco=6, num_imagenet=16,
                                      num_seg_train=0, num_seg_val=0)
    tool = load_tool('analysis/knn_agreement')
    with pytest.raises(SystemExit):  # no kNN files yet: the error names the file
        tool.main([data])
    assert 'nns_coco.npz' in capsys.readouterr().err
    for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
        paths = list_images(osp.join(data, folder))
        n = len(paths)
        nns = np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)
        write_knn_file(osp.join(data, 'nns', f'nns_{subset}.npz'), nns, paths,
                       osp.join(data, folder))
    out = tool.main([data])
    assert set(out) == {'coco', 'imagenet'}
    for subset in out.values():
        assert set(subset) == {'all', 'things'}
        assert all(0.0 <= a['knn'] <= 1.0 and 0.0 <= a['random'] <= 1.0 for a in subset.values())
    # sorted by class folder, two images per class: half the pairs share the main class
    assert out['imagenet']['things']['knn'] > out['imagenet']['things']['random']
    # the oracle files: loadable for the same image list, at least as good as the given pairs
    from cotap_mm.datasets.image_list import image_list_digest
    from cotap_mm.datasets.knn_pairs import load_nns
    out = tool.main([data, '--write-oracle', '3'])
    for subset, folder in (('coco', 'coco/train2017'), ('imagenet', 'imagenet/train')):
        paths = list_images(osp.join(data, folder))
        nns = load_nns(osp.join(data, 'nns', f'nns_{subset}_oracle.npz'), len(paths),
                       list_digest=image_list_digest(paths, osp.join(data, folder)))
        assert nns.shape == (len(paths), 4)
        assert out[f'{subset}_oracle']['all']['knn'] >= out[subset]['all']['knn']
