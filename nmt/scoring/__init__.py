"""Scoring with a trained model: p(target | source) for phrase tables, sentence pairs and n-best lists (Cho et
al. 2014 §3.1, §4). ``scorer`` runs the model; the Moses files it scores are read and rewritten byte for byte by
``nmt.moses`` (whose main names are re-exported here)."""

from nmt.moses import NBestEntry, PhrasePair, parse_nbest_line, parse_phrase_line, unescape
from nmt.scoring.scorer import PairScorer, PairScores, ScoringConfig

__all__ = [
    "NBestEntry",
    "PairScorer",
    "PairScores",
    "PhrasePair",
    "ScoringConfig",
    "parse_nbest_line",
    "parse_phrase_line",
    "unescape",
]
