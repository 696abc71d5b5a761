"""Pure functions of the evaluation probes (no I/O, no model)."""
from .chance import chance_confusion, chance_segmentation_metrics, class_pixel_counts
from .cluster_probe import (assign_clusters, confusion_matrix, faiss_kmeans, hungarian_match,
                            majority_match, match_clusters, match_confusion,
                            segmentation_metrics)
from .concentration import concentration_per_class, patch_labels, semantic_concentration
from .dense_probe import fit_dense_linear_probe
from .hummingbird import (patch_label_fractions, retrieve_label_distributions,
                          sample_memory_patches, upsample_argmax)
from .knn import (knn_grid_evaluate, knn_topk, knn_vote_scores, l2_normalize_,
                  topk_accuracy, weighted_knn_classify)
from .linear_probe import evaluate_linear_probe, train_linear_probe

__all__ = [
    'l2_normalize_', 'knn_topk', 'knn_vote_scores', 'weighted_knn_classify', 'knn_grid_evaluate',
    'topk_accuracy',
    'train_linear_probe', 'evaluate_linear_probe', 'confusion_matrix', 'segmentation_metrics',
    'hungarian_match', 'majority_match', 'match_clusters', 'match_confusion', 'faiss_kmeans',
    'assign_clusters', 'semantic_concentration', 'concentration_per_class', 'patch_labels',
    'class_pixel_counts',
    'chance_confusion', 'chance_segmentation_metrics', 'fit_dense_linear_probe',
    'patch_label_fractions', 'sample_memory_patches', 'retrieve_label_distributions',
    'upsample_argmax'
]
