"""The networks: plain PyTorch, no Lightning (see ``base.py`` for the contract search and scoring use)."""

from nmt.model.base import Seq2Seq, StepOutput, TeacherForced, reorder
from nmt.model.config import NetworkConfig, build_model

__all__ = ["NetworkConfig", "Seq2Seq", "StepOutput", "TeacherForced", "build_model", "reorder"]
