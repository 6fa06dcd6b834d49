"""Inception-v3 pool features for users who have the FID Inception weights locally (``--weights PATH``).

Uses torchmetrics' wrapper of torch-fidelity's FID Inception (``pip install torch-fidelity``); nothing is downloaded:
without a weights path this raises a clear error instead."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import KakusanError


class InceptionFeatures(nn.Module):
    num_features = 2048

    def __init__(self, weights: str | Path | None):
        super().__init__()
        if not weights or not Path(weights).is_file():
            raise KakusanError("the inception feature net needs the path of local FID Inception weights "
                               "(pt_inception-2015-12-05); kakusan never downloads weights")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                          feature_extractor_weights_path=str(weights))
        except ModuleNotFoundError as e:
            raise KakusanError(f"the inception feature net needs torch-fidelity: pip install torch-fidelity ({e})")

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1], any size, 1 or 3 channels -> (N, 2048)."""
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).reshape(x.shape[0], -1)
