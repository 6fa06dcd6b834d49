"""The settings of EmerDiff segmentation (Namekata et al., ICLR 2024, Sec. 3): each is an option of
``kakusan segment`` with its help and default, written once here."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .. import KakusanError
from ..utils.options import option


@dataclass
class EmerDiffSettings:
    k: int = option(6, "Number of segments (k-means clusters).")
    t_f: float = option(1.0, "Timestep (of 1000) of the feature pass (the paper's t_f = 1).")
    t_m: float = option(281.0, "Timestep (of 1000) the modulated denoising starts from (the paper's 281).")
    lam: float = option(10.0, "Modulation strength lambda (absolute: added as is to the layer's output).",
                        flag="lambda")
    lam_rel: float | None = option(None, "Modulation strength relative to the modulated layer's activation scale "
                                   "(the RMS of its output in the unmodulated run); replaces --lambda.",
                                   flag="lambda-rel")
    mod_at: str = option("all", "Modulate at every DDIM step from t_m on (all) or only at the first (first).")
    start: str = option("noise", "How x at t_m is made: fresh noise (noise, the paper's) or DDIM inversion of the "
                        "image (inversion).")
    inversion_steps: int = option(10, "DDIM inversion steps from sigma_min to t_m (with --start inversion).")
    null_prompt: bool = option(False, "Condition on the null prompt instead of the image's own sentence / prompt.")
    feature_layer: str = option("auto", "Cross-attention layer of the queries: up.B.A or a full name.", flag="layer",
                                shown="auto: first of the lowest-resolution up block")
    mod_layer: str = option("auto", "Layer modulated.", shown="auto: the third cross-attention layer of the feature "
                            "layer's block, as in the paper")
    replay: bool = option(True, "Replay the unmodulated run's attention maps in the modulated runs.")
    chunk: int = option(8, "Modulated runs per network batch (0: all 2K at once); bounds memory.")
    steps: int = option(5, "DDIM steps from t_m to 0.")
    smooth: float = option(1.0, "Std (pixels) of the Gaussian that smooths the difference maps; 0 = none.")
    seed: int = option(0, "Seed of the noise and k-means.")
    sigma_data: float | None = None  # data scale for the time mapping; None: 0.5, or 1 for a latent model

    def validate(self) -> "EmerDiffSettings":
        if self.k < 2:
            raise KakusanError(f"k must be >= 2 (got {self.k})")
        for name in ("t_f", "t_m"):
            t = getattr(self, name)
            if not 0 <= t <= 999:
                raise KakusanError(f"{name.replace('_', '-')} = {t:g} is outside the schedule [0, 999]")
        if self.chunk < 0:
            raise KakusanError(f"chunk must be >= 0 (got {self.chunk})")
        if self.steps < 1 or self.inversion_steps < 1 or self.smooth < 0 or self.lam < 0 or (self.lam_rel or 0) < 0:
            raise KakusanError("steps and inversion-steps must be >= 1; smooth, lambda and lambda-rel >= 0")
        if self.mod_at not in ("all", "first"):
            raise KakusanError(f"mod-at must be all or first (got {self.mod_at!r})")
        if self.start not in ("noise", "inversion"):
            raise KakusanError(f"start must be noise or inversion (got {self.start!r})")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
