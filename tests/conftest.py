import random
from pathlib import Path

import pytest

WORDS = (
    "the neuron fires on numbers in lists and on words about music while others respond to "
    "python code keywords like def return import class and to capitalised names such as Paris "
    "London Berlin with commas 1,000 2,500 and hex 0xdeadbeef base64 aGVsbG8gd29ybGQ="
).split()


def write_text_tree(root: Path, n_docs: int = 60, words_per_doc: int = 400, seed: int = 0) -> Path:
    """A directory of generated text documents, deterministic for a seed."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(words_per_doc)]
        (root / f"doc_{i:03d}.txt").write_text(" ".join(words) + "\n")
    return root


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A small corpus (vocab 300) built from generated text, shared by the tests."""
    from solulab.data import build_corpus

    base = tmp_path_factory.mktemp("corpus")
    source = write_text_tree(base / "text")
    out = base / "corpus"
    build_corpus(out, sources=[source], vocab_size=300, val_fraction=0.2, progress=False)
    return out
