"""Token sentences: the condition of a cross-attention model, in one place.

A sentence is ``[<bos>, word(c_1), ..., word(c_k)]`` padded with the null token to a fixed length. Id 0 is the null
token (also the whole "no condition" sentence), 1 is <bos>, ``2 + c`` is the word of class ``c`` (vocabulary size
:func:`token_vocab_size`). A class label's sentence is ``[<bos>, word(c)]`` (:data:`TOKENS_PER_LABEL` tokens); a digit
scene's names its 2-4 digits (:mod:`kakusan.data.scenes`); a user's sentence (``kakusan sample --tokens "3 7"``) names
classes by their names and is padded to the length the model was trained with.
"""
from __future__ import annotations

import torch

from .. import KakusanError

NULL_TOKEN, BOS_TOKEN = 0, 1
FIRST_WORD = 2  # the id of class 0's word
TOKENS_PER_LABEL = 2  # the length of a label's sentence; a null sentence has the same length


def token_vocab_size(num_classes: int) -> int:
    """Ids of a sentence: null, <bos> and one word per class."""
    return num_classes + FIRST_WORD


def tokens_for_labels(labels: torch.Tensor) -> torch.Tensor:
    """(N,) class labels -> (N, 2) token ids: each label's sentence [<bos>, word(label)]."""
    return torch.stack([torch.full_like(labels, BOS_TOKEN), labels + FIRST_WORD], dim=1)


def sentence_ids(classes: list[int], length: int) -> list[int]:
    """The sentence naming ``classes`` in order, padded with the null token to ``length`` ids."""
    ids = [BOS_TOKEN] + [int(c) + FIRST_WORD for c in classes]
    if len(ids) > length:
        raise KakusanError(f"tokens: {len(classes)} words; the model was trained on at most {length - 1}")
    return ids + [NULL_TOKEN] * (length - len(ids))


def sentence_classes(tokens: torch.Tensor) -> list[int]:
    """The classes a sentence names, in order (the inverse of :func:`sentence_ids`)."""
    return [int(t) - FIRST_WORD for t in tokens.tolist() if t >= FIRST_WORD]


def parse_sentence(words: str, class_names: list[str], length: int = TOKENS_PER_LABEL) -> torch.Tensor:
    """A user's sentence of class names, e.g. "3 7" -> [<bos>, word(3), word(7), <null>, ...] of ``length`` ids."""
    names = list(class_names)
    classes = []
    for w in words.split():
        if w not in names:
            raise KakusanError(f"tokens: unknown word {w!r}; the model knows {' '.join(names)}")
        classes.append(names.index(w))
    if 1 + len(classes) > length:
        raise KakusanError(f"tokens: {words!r} has {len(classes)} words; the model was trained on at most "
                           f"{length - 1}")
    return torch.tensor(sentence_ids(classes, length))


def parse_sentences(text: str, class_names: list[str], length: int, n: int) -> torch.Tensor:
    """(n, length) token ids of comma-separated sentences, e.g. "3 7,1 2 5", cycled over the n samples."""
    rows = torch.stack([parse_sentence(s, class_names, length) for s in text.split(",")])
    return rows[torch.arange(n) % len(rows)]
