"""Training: the generic loop for any objective (accelerate), power-function EMAs, resumable checkpoints, configs.
The denoiser objective and its ``Trainer`` are in :mod:`kakusan.diffusion.training` (names imported on first use)."""
from ..utils.lazy import lazy_names

_WHERE = {"LoopConfig": "config", "Objective": "loop", "TrainLoop": "loop", "TrainingDiverged": "loop"}
__all__ = list(_WHERE)
__getattr__ = lazy_names(__name__, _WHERE)
