import os
import random
import signal
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU, Triton kernels can only run in Triton's CPU interpreter, which must be chosen
    # before Triton is first imported (its own library functions are decorated then).
    os.environ.setdefault("TRITON_INTERPRET", "1")

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A shell that starts pytest in the background (`make test &`) ignores SIGINT, and an ignored
    # signal stays ignored in every command the tests start, so their Ctrl-C tests would see
    # nothing. A handler is not inherited: the commands start with the default.
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


@pytest.fixture(scope="session")
def collected_runs(small_corpus, tmp_path_factory) -> Path:
    """A directory with two runs, ``gelu`` and ``solu_ln`` (1 layer, 64 neurons, random
    weights), each with a neuron store over 1,024 validation tokens."""
    import json
    import shutil

    from solulab import ModelConfig, Transformer
    from solulab.neurons.collect import collect
    from solulab.neurons.settings import StoreSettings

    root = tmp_path_factory.mktemp("runs")
    for act, d_model in (("gelu", 16), ("solu_ln", 32)):
        run = root / act
        cfg = ModelConfig(n_layers=1, d_model=d_model, n_heads=2, d_mlp=64, n_ctx=32,
                          d_vocab=300, act_fn=act, init_std=0.3)
        model = Transformer(cfg)
        model.save_pretrained(run)
        shutil.copy(small_corpus / "tokenizer.json", run / "tokenizer.json")
        (run / "run.json").write_text(json.dumps({"corpus": str(small_corpus),
                                                  "n_params": model.n_params()}))
        collect(run, n_tokens=1024, settings=StoreSettings(k=24), progress=False)
    return root
