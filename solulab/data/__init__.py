"""Text corpora for training: sources in, a tokenizer and token shards out (see ``corpus``)."""

from solulab.data.corpus import Corpus, CorpusError, Manifest, build_corpus, is_corpus
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
