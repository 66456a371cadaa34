"""nmt: the RNN Encoder-Decoder of Cho et al. (2014) and RNNsearch of Bahdanau et al. (2015)."""

__version__ = "0.1.0"
