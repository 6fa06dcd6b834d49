"""Measuring quality offline: the judge panel (feature networks of different kinds, :mod:`.judges`), Fréchet distance
/ KID (torchmetrics), improved precision and recall (Kynkäänniemi et al. 2019), class accuracy, the real-vs-real
floor, and paired comparisons under every judge (:mod:`.panel`)."""
from .featurenet import FeatureNet, load_featurenet
from .judges import PANEL, Judge, load_judge, load_panel, train_judge
from .panel import compare_sets, panel_scores, verdict
from .scores import evaluate, precision_recall

__all__ = ["FeatureNet", "load_featurenet", "evaluate", "precision_recall", "PANEL", "Judge",
           "load_judge", "load_panel", "train_judge", "panel_scores", "compare_sets", "verdict"]
