"""Measuring quality offline: a shipped MNIST evaluation network, Fréchet distance / KID (torchmetrics),
improved precision and recall (Kynkäänniemi et al. 2019), class accuracy, and the real-vs-real floor."""
from .featurenet import FeatureNet, load_featurenet, train_featurenet
from .scores import evaluate, precision_recall

__all__ = ["FeatureNet", "load_featurenet", "train_featurenet", "evaluate", "precision_recall"]
