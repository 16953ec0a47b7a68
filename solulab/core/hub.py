"""Names like ``hf:NeelNanda/SoLU_1L_v9_old`` and tokenizers named by a checkpoint, resolved from
disk only: the Hugging Face cache (``huggingface_hub``, ``local_files_only``) or a directory the
user gives. Nothing is downloaded; when a file is not on disk the error says how to put it there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeGuard

from solulab.errors import SolulabError
from solulab.extras import missing_extra

PREFIX = "hf:"
TOKENIZER_FILE = "tokenizer.json"


def is_hub_name(source: str | Path) -> TypeGuard[str]:
    return isinstance(source, str) and source.startswith(PREFIX)


def _hub():
    try:
        import huggingface_hub
    except ModuleNotFoundError as e:
        raise (missing_extra(e) or e) from None
    return huggingface_hub


def resolve(source: str) -> Path:
    """The cached snapshot directory of ``hf:ORG/NAME``; an error when nothing is cached."""
    repo = source[len(PREFIX):]
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise SolulabError(f"{source!r}: expected hf:ORG/NAME")
    hub = _hub()
    try:
        return Path(hub.snapshot_download(repo, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
        raise SolulabError(
            f"{repo} is not in the Hugging Face cache ({hub.constants.HF_HUB_CACHE}); solulab "
            f"works offline and reads only cached files. On a machine with network access run "
            f"`huggingface-cli download {repo}` (same cache) or copy the repository into a "
            f"directory and pass that directory. ({type(e).__name__})") from None


def find_tokenizer(name: str | None, model_dir: Path) -> Path:
    """The ``tokenizer.json`` of a checkpoint: inside its directory, else the named tokenizer's
    repository in the Hugging Face cache (or a local directory of that name)."""
    local = Path(model_dir) / TOKENIZER_FILE
    if local.is_file():
        return local
    if not name:
        raise SolulabError(f"{model_dir} has no {TOKENIZER_FILE} and its config names no "
                           f"tokenizer: copy the tokenizer's {TOKENIZER_FILE} into {model_dir}")
    if (Path(name) / TOKENIZER_FILE).is_file():
        return Path(name) / TOKENIZER_FILE
    hub = _hub()
    try:
        cached = hub.try_to_load_from_cache(name, TOKENIZER_FILE)
    except Exception:  # an invalid repository id
        cached = None
    if isinstance(cached, str):
        return Path(cached)
    raise SolulabError(
        f"the checkpoint's tokenizer {name!r} is not on this machine: copy its {TOKENIZER_FILE} "
        f"into {model_dir}, or fetch it into the Hugging Face cache on a machine with network "
        f"access (`huggingface-cli download {name} {TOKENIZER_FILE}`)")
