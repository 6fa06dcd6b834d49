"""Training: the generic loop for any objective (accelerate), power-function EMAs, resumable checkpoints, configs.
The denoiser objective and its ``Trainer`` are in :mod:`kakusan.diffusion.training`."""
from .config import LoopConfig, TrainConfig
from .loop import Objective, TrainingDiverged, TrainLoop

__all__ = ["LoopConfig", "Objective", "TrainConfig", "TrainLoop", "TrainingDiverged"]
