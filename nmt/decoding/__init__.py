"""Search over the model's output distribution, separate from the model (see ``nmt.model.base``)."""

from nmt.decoding.search import Hypothesis, SearchConfig, search

__all__ = ["Hypothesis", "SearchConfig", "search"]
