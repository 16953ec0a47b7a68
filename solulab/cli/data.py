"""``solulab corpus``: build token corpora."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from solulab.cli.exits import reports_errors, stops_cleanly
from solulab.corpus_defaults import VAL_FRACTION, VOCAB_SIZE

app = typer.Typer(help="Build and inspect token corpora.", no_args_is_help=True)


@app.command("build")
@reports_errors
def corpus_build(
    out: Path = typer.Option(..., help="Directory to create for the corpus."),
    source: Optional[list[Path]] = typer.Option(
        None, help="File or directory of .txt .md .py .rst .html, .jsonl(.gz|.zst), .parquet "
        "shards or a saved `datasets` directory (repeatable; .rst and .html lose their markup). "
        "Default: the built-in corpus (this Python's standard library source)."),
    vocab_size: int = typer.Option(VOCAB_SIZE, help="BPE vocabulary size."),
    val_fraction: float = typer.Option(VAL_FRACTION,
                                       help="Share of documents held out for validation."),
    max_bytes: Optional[int] = typer.Option(None, help="Stop reading after this many bytes."),
    tokenizer: Optional[Path] = typer.Option(
        None, help="Tokenize with this tokenizer.json (a model's own) instead of training one."),
    keep_markup: bool = typer.Option(False, "--keep-markup",
                                     help="Read .rst and .html files as they are."),
    text_field: str = typer.Option("text", help="The field or column holding each record's "
                                   "text (.jsonl, .parquet, datasets)."),
    workers: int = typer.Option(
        1, help="Encoding processes (1: in this process, where the tokenizer already uses every "
        "core; more help where reading documents is the bottleneck). The corpus is the same "
        "whatever the number."),
):
    """Tokenize text sources into a corpus directory (tokenizer + token shards). A stopped build
    resumes where it stopped when the same command is run again."""
    from solulab.data.build import build_corpus, partial_dir

    def what_was_kept() -> str:
        if not partial_dir(out).is_dir():
            return f"nothing was written to {out}"
        return (f"nothing was written to {out}; the work done so far is kept in "
                f"{partial_dir(out)}: run the same command again to resume")

    with stops_cleanly(what_was_kept):
        manifest = build_corpus(out, sources=source or None, vocab_size=vocab_size,
                                val_fraction=val_fraction, max_bytes=max_bytes,
                                tokenizer=tokenizer, keep_markup=keep_markup,
                                text_field=text_field, workers=workers)
    typer.echo(manifest.summary())
    typer.echo(f"corpus written to {out}")
