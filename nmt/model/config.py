"""The network's hyper-parameters (the ``model.network`` section of a config); ``factory.build_model`` builds one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class NetworkConfig:
    """Shape of the network. Defaults are Bahdanau et al. 2015's RNNsearch."""

    architecture: Literal["rnnencdec", "rnnsearch"] = "rnnsearch"
    """rnnencdec: Cho et al. 2014's RNN Encoder–Decoder; rnnsearch: Bahdanau et al. 2015 (attention)."""
    cell: Literal["paper", "cudnn"] = "paper"
    """paper: the GRU of Cho Eq. 8 (reset gate before U); cudnn: nn.GRU's formulation (faster, a different function)."""
    emb_dim: int = 620
    """Word embedding size m (both sides)."""
    emb_rank: int | None = None
    """If set, embeddings are a V×rank lookup times a rank×emb_dim matrix (Cho's rank-100 input matrices)."""
    encoder_dim: int = 1000
    """Encoder GRU units (per direction for rnnsearch)."""
    decoder_dim: int = 1000
    """Decoder GRU units n (also the size of Cho's summary c)."""
    attention_dim: int = 1000
    """Alignment model units n' (rnnsearch)."""
    maxout_units: int = 500
    """Maxout units l of the deep output layer."""
    maxout_pool: int = 2
    """Inputs pooled by each maxout unit."""
    output_rank: int | None = None
    """If set, the output matrix W_o is the product of two matrices of this rank (Cho's rank-100 output matrix)."""
    dropout: float = 0.0
    """Dropout on embeddings and on the maxout output (not in the papers; useful on small corpora)."""
    embedding_dropout: float | None = None
    """Dropout on the embeddings (both sides) in place of ``dropout`` there (which still drops the maxout output);
    None: ``dropout``. Srivastava et al. 2014, as the strongest RNN systems on Multi30k set it apart (0.3–0.4)."""
    context_dropout: float = 0.0
    """Dropout on what the decoder reads of the source, in training: the annotations h_j (rnnsearch), the summary
    c (rnnencdec). Srivastava et al. 2014 (the strongest RNN systems on Multi30k use about 0.5)."""
    init: Literal["paper", "pytorch"] = "paper"
    """paper: orthogonal recurrent weights, N(0, init_std²) elsewhere; pytorch: PyTorch's module defaults."""
    init_std: float = 0.01
    """Standard deviation of the paper initialisation."""
    attention_init_std: float = 0.001
    """Standard deviation of W_a and U_a in the paper initialisation."""
    layer_norm: Literal["none", "encoder", "all"] = "none"
    """Ba et al. 2016 (not in the papers): layer normalisation of each paper GRU's input and recurrent products, gate
    by gate, with learned gains and biases: in the encoder's cells (as LIUM-CVC's WMT17 system), or in the decoder's
    too. The paper cell only."""
    tie_embeddings: bool = False
    """Press & Wolf 2017 (not in the papers): the target embedding matrix is the output matrix W_o, one parameter.
    Needs the embedding lookup's width (emb_rank, else emb_dim) to equal W_o's input (output_rank, else
    maxout_units)."""

    def validate(self) -> None:
        """Refuse, in one line (ValueError), options that no network can have together. ``build_model`` calls it:
        not ``__post_init__``, where the config parser would report only that no type of ``network`` fits."""
        for name in ("dropout", "embedding_dropout", "context_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0 <= rate < 1:
                raise ValueError(f"model.network.{name}: {rate} is not a dropout rate (0 ≤ p < 1)")
        if self.layer_norm != "none" and self.cell != "paper":
            raise ValueError(
                f"model.network.layer_norm: {self.layer_norm!r} needs cell 'paper' (the {self.cell} cell "
                "computes its gates in one fused product that leaves nothing to normalise)"
            )
        if self.tie_embeddings and self.tied_width is None:
            raise ValueError(
                f"model.network.tie_embeddings needs the target embedding's width (emb_rank or emb_dim: "
                f"{self.emb_rank or self.emb_dim}) to equal the output layer's input (output_rank or maxout_units: "
                f"{self.output_rank or self.maxout_units})"
            )

    @property
    def tied_width(self) -> int | None:
        """The columns of the matrix the target embeddings and W_o can share: the lookup's width if it equals the
        input width of W_o's last factor (the one with a row per target word), else None."""
        lookup, output = self.emb_rank or self.emb_dim, self.output_rank or self.maxout_units
        return lookup if lookup == output else None

    @property
    def embedding_dropout_rate(self) -> float:
        """The dropout rate of the embeddings: ``embedding_dropout``, else ``dropout``."""
        return self.dropout if self.embedding_dropout is None else self.embedding_dropout

    @property
    def encoder_layer_norm(self) -> bool:
        """Whether the encoder's GRU cells are layer-normalised (``layer_norm: encoder`` or ``all``)."""
        return self.layer_norm != "none"

    @property
    def decoder_layer_norm(self) -> bool:
        """Whether the decoder's GRU cell is layer-normalised (``layer_norm: all``)."""
        return self.layer_norm == "all"

    @property
    def has_attention(self) -> bool:
        """Whether the network has an alignment model (rnnsearch), the one that uses ``attention_dim``."""
        return self.architecture == "rnnsearch"
