"""Scoring with a trained model: p(target | source) for phrase tables, sentence pairs and n-best lists (Cho et
al. 2014 §3.1, §4). ``moses`` reads and rewrites Moses files byte for byte; ``scorer`` runs the model."""

from nmt.scoring.moses import Hypothesis, PhrasePair, parse_nbest_line, parse_phrase_line, unescape
from nmt.scoring.scorer import PairScorer, PairScores, ScoringConfig

__all__ = [
    "Hypothesis",
    "PairScorer",
    "PairScores",
    "PhrasePair",
    "ScoringConfig",
    "parse_nbest_line",
    "parse_phrase_line",
    "unescape",
]
