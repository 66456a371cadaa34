"""nmt: the RNN Encoder-Decoder of Cho et al. (2014) and RNNsearch of Bahdanau et al. (2015).

from nmt import SearchConfig, Translator     # inference from Python: see nmt.inference.translator
"""

__version__ = "0.1.0"

_LAZY = {
    "Translator": "nmt.inference",
    "Translation": "nmt.inference",
    "SearchConfig": "nmt.decoding",
    "ScoringConfig": "nmt.scoring",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    """`nmt.Translator` and friends, imported on first use: `import nmt` (the CLI's `--help`) stays free of torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nmt' has no attribute {name!r}")
