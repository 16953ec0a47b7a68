"""Corpus build throughput against the tokenizer's own batch encoding, side by side.

Measured on the same documents and tokenizer:

1. ceiling: every document read into memory first, then only ``tokenizer.encode_batch`` (and
   ``encode_batch_fast``, the call the build makes, without offsets) timed, one call;
2. ``build_corpus`` with 1 worker (encoding in the building process) and with N worker
   processes, end to end: reading the sources twice (scan and encoding), encoding, chunk files,
   shards, manifest. Tokens include each document's end-of-text token in both.

The tokenizer is ``--tokenizer`` (e.g. an existing corpus's ``tokenizer.json``), or one trained
on the sources first, outside the timing.

    python benchmarks/corpus_throughput.py [--source DIR] [--tokenizer corpus/tokenizer.json]
        [--workers N] [--max-bytes 20000000] [--vocab-size 4096]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from solulab.data.build import build_corpus
from solulab.data.sources import SourceStats, iter_documents, resolve_sources
from solulab.data.tokenizer import load_tokenizer


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=None,
                        help="source directory (default: the built-in corpus, the stdlib)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer.json to encode with (default: train one first)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-bytes", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args()
    sources = None if args.source is None else [args.source]

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tokenizer_path = args.tokenizer
        if tokenizer_path is None:  # trained outside the timing, by a build of its own
            build_corpus(tmp / "trained", sources, vocab_size=args.vocab_size,
                         max_bytes=args.max_bytes, progress=False, workers=args.workers)
            tokenizer_path = tmp / "trained" / "tokenizer.json"
        tokenizer = load_tokenizer(tokenizer_path)

        stats = SourceStats()
        texts = [d.text for d in iter_documents(resolve_sources(sources), stats, args.max_bytes)]
        print(f"{stats.documents:,} documents, {stats.bytes / 1e6:.1f} MB; tokenizer "
              f"{tokenizer_path} (vocab {tokenizer.get_vocab_size()}); "
              f"{len(os.sched_getaffinity(0))} CPUs")

        rows = []
        for name, encode in (("encode_batch", tokenizer.encode_batch),
                             ("encode_batch_fast", tokenizer.encode_batch_fast)):
            encodings, seconds = timed(lambda encode=encode: encode(texts))
            tokens = sum(len(e.ids) for e in encodings) + len(encodings)
            rows.append((f"{name}, in memory (ceiling)", tokens, seconds))
            del encodings
        ceiling = rows[0][1] / rows[0][2]
        for workers in (1, args.workers):
            manifest, seconds = timed(lambda workers=workers: build_corpus(
                tmp / f"built-{workers}", sources, tokenizer=tokenizer_path,
                max_bytes=args.max_bytes, progress=False, workers=workers))
            rows.append((f"corpus build, {workers} worker(s)", manifest.total_tokens, seconds))

    print(f"\n| {'what':<40} | {'tokens':>12} | {'s':>7} | {'tokens/s':>10} | "
          f"{'x encode_batch':>14} |")
    print(f"|{'-' * 42}|{'-' * 14}|{'-' * 9}|{'-' * 12}|{'-' * 16}|")
    for name, tokens, seconds in rows:
        rate = tokens / seconds
        print(f"| {name:<40} | {tokens:>12,} | {seconds:>7.2f} | {rate:>10,.0f} | "
              f"{rate / ceiling:>14.2f} |")


if __name__ == "__main__":
    main()
