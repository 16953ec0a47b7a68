"""The defaults of a corpus build, here rather than in ``solulab.data`` (which loads numpy and
the tokenizers) so that the CLI reads them cheaply."""

VOCAB_SIZE = 4096  # of the BPE tokenizer trained
VAL_FRACTION = 0.05  # share of documents held out for validation
