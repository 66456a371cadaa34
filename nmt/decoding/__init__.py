"""Search over the model's output distribution, separate from the model (see ``nmt.model.base``)."""

from nmt.decoding.ensemble import Ensemble, check_same_vocabulary
from nmt.decoding.search import Hypothesis, SearchConfig, search, select_rows

__all__ = ["Ensemble", "Hypothesis", "SearchConfig", "check_same_vocabulary", "search", "select_rows"]
