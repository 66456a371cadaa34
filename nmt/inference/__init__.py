"""Inference with a trained model: `Translator` (translate, score, encode, attention) and the one path from encoded
lines to padded batches it uses (`batching`; text becomes ids in `nmt.data.encoding`)."""

from nmt.inference.translator import Alignment, Candidate, Translation, Translator

__all__ = ["Alignment", "Candidate", "Translation", "Translator"]
