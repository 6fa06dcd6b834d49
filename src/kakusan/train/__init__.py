"""Training: the loop (accelerate), EMAs, resumable checkpoints."""
from .config import TrainConfig
from .trainer import Trainer, TrainingDiverged

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged"]
