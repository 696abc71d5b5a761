"""cotap_mm/evaluation/functional/knn_pairs.py: the classes an image shares with its kNN
neighbours, against random pairs."""
import numpy as np
import pytest

from cotap_mm.evaluation.functional import neighbour_class_agreement


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


def test_bad_shapes_name_the_layout():
    with pytest.raises(ValueError, match='column 0'):
        neighbour_class_agreement(np.zeros((3, 1), int), [(0, )] * 3)
    with pytest.raises(ValueError, match='N=2'):
        neighbour_class_agreement(np.zeros((3, 2), int), [(0, )] * 2)
