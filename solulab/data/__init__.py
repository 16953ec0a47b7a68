"""Text corpora for training: sources in, a tokenizer and token shards out (``build``), opened
for training (``corpus``)."""

from solulab.data.build import build_corpus
from solulab.data.corpus import Corpus, CorpusError, Manifest, is_corpus
from solulab.data.shards import SHARD_TOKENS, TokenArray
from solulab.data.tokenizer import EOT_ID, EOT_TOKEN

__all__ = [
    "EOT_ID",
    "EOT_TOKEN",
    "SHARD_TOKENS",
    "Corpus",
    "CorpusError",
    "Manifest",
    "TokenArray",
    "build_corpus",
    "is_corpus",
]
