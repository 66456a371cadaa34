"""The networks: plain PyTorch, no Lightning (see ``base.py`` for the contract search and scoring use)."""

from nmt.model.base import SearchModel, Seq2Seq, StepOutput, TeacherForced
from nmt.model.config import NetworkConfig
from nmt.model.factory import build_model

__all__ = ["NetworkConfig", "SearchModel", "Seq2Seq", "StepOutput", "TeacherForced", "build_model"]
