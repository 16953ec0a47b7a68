"""A solulab run as an lm-evaluation-harness model, for the paper's other tasks (LAMBADA, ARC,
OpenBookQA, HellaSwag, MMLU, TriviaQA) wherever their datasets are at hand.

The harness finds models in its registry, and importing this module registers ``solulab``.
Its command line does not look for models in other packages, so run it through this module,
with the harness's own arguments::

    python -m solulab.evals.lm_eval_adapter run --model solulab --model_args path=RUN \\
        --tasks solulab_arithmetic lambada_openai

Nothing is downloaded: the harness runs offline (``HF_DATASETS_OFFLINE``, ``HF_HUB_OFFLINE``), a
task whose dataset is not in the local Hugging Face cache is refused up front, by name, and
``solulab_arithmetic`` (300 arithmetic items, made here) is there unless ``--include_path``
names a directory of your own tasks.

or from Python: ``import solulab.evals.lm_eval_adapter`` then ``lm_eval.simple_evaluate(
model="solulab", model_args="path=RUN", tasks=[...])``.

Log-likelihoods are computed in float32 from the model's logits on the last ``n_ctx`` tokens of
context plus continuation; ``is_greedy`` says whether greedy decoding would have produced the
continuation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from solulab.core.model import Transformer
from solulab.data.tokenizer import load_tokenizer
from solulab.errors import SolulabError
from solulab.runs import rundir

EOT = "<|endoftext|>"


@register_model("solulab")
class SolulabLM(LM):
    """``--model solulab --model_args path=RUN[,device=cpu][,batch_size=8]``; the device
    defaults to CUDA where there is one, else the CPU."""

    def __init__(self, path: str, device: str | None = None, batch_size: int | str = 8,
                 max_gen_toks: int = 256, **_ignored):
        super().__init__()
        run = Path(path)
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "cuda" if torch.cuda.is_available() else "cpu"  # the harness asks for cuda
        if not (run / rundir.TOKENIZER).is_file():
            raise SolulabError(f"{run} has no tokenizer.json: point path= at a run directory")
        self.model = Transformer.from_pretrained(run, device=device).eval()
        self.tokenizer = load_tokenizer(run / rundir.TOKENIZER)
        self.torch_device = torch.device(device)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_gen_toks = int(max_gen_toks)
        self.n_ctx = self.model.cfg.n_ctx
        self.eot_id = self.tokenizer.token_to_id(EOT)
        if self.eot_id is None:
            raise SolulabError(f"the tokenizer of {run} has no {EOT} token")

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """``--model_args`` win over the harness's own settings (``device=cpu`` given both ways
        is one value, not two)."""
        args = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**args, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation; whitespace ending the context moves to the
        continuation, as a tokenizer that attaches spaces to the next word would read it."""
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        context_ids = self.encode(stripped) if stripped else [self.eot_id]
        whole = self.encode(stripped + continuation) if stripped else self.encode(continuation)
        if stripped and whole[:len(context_ids)] == context_ids:
            return context_ids, whole[len(context_ids):]
        return context_ids, self.encode(continuation)

    @torch.no_grad()
    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """``(sum of log p(continuation | context), greedy)`` per pair of token id lists."""
        results = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start:start + self.batch_size]
            rows = [(ctx + cont)[-(self.n_ctx + 1):] for ctx, cont in batch]
            width = max(len(r) for r in rows) - 1
            inputs = torch.full((len(rows), width), self.eot_id, dtype=torch.long)
            for i, row in enumerate(rows):
                inputs[i, :len(row) - 1] = torch.tensor(row[:-1])
            logprobs = F.log_softmax(self.model(inputs.to(self.torch_device)).float(), dim=-1)
            for i, ((_, cont), row) in enumerate(zip(batch, rows)):
                n = min(len(cont), len(row) - 1)  # a continuation longer than n_ctx is cut
                end = len(row) - 1
                scores = logprobs[i, end - n:end]  # [n, vocab], position t predicts t + 1
                target = torch.tensor(row[-n:], device=scores.device)
                total = scores.gather(1, target[:, None]).sum().item()
                results.append((total, bool((scores.argmax(-1) == target).all())))
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self.split_pair(*request.args) for request in requests]
        empty = [i for i, (_, cont) in enumerate(pairs) if not cont]
        if empty:
            raise SolulabError(f"request {empty[0]} has an empty continuation")
        return self.score(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole string after an end-of-text token, in windows of
        ``n_ctx`` predictions, each with as much preceding text as fits."""
        totals = []
        for request in tqdm(requests, disable=disable_tqdm, desc="rolling loglikelihood"):
            seq = [self.eot_id, *self.encode(request.args[0])]
            pairs = []
            for end in range(len(seq), 1, -self.n_ctx):
                begin = max(1, end - self.n_ctx)
                pairs.append((seq[max(0, end - self.n_ctx - 1):begin], seq[begin:end]))
            totals.append(sum(total for total, _ in self.score(pairs)))
        return totals

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, cut at the first of the request's ``until`` strings."""
        outputs = []
        for request in tqdm(requests, disable=disable_tqdm, desc="generating"):
            context, kwargs = request.args
            until = kwargs.get("until", [EOT])
            until = [until] if isinstance(until, str) else list(until)
            ids = self.encode(context) or [self.eot_id]
            generated: list[int] = []
            text = ""
            for _ in range(int(kwargs.get("max_gen_toks", self.max_gen_toks))):
                window = torch.tensor([(ids + generated)[-self.n_ctx:]],
                                      device=self.torch_device)
                next_id = int(self.model(window)[0, -1].argmax())
                if next_id == self.eot_id:
                    break
                generated.append(next_id)
                text = self.tokenizer.decode(generated, skip_special_tokens=False)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                text = text.split(stop)[0] if stop else text
            outputs.append(text)
        return outputs


LOCAL_TASK = "solulab_arithmetic"


def write_local_task(directory: Path) -> Path:
    """``solulab_arithmetic`` as a harness task over a JSON-lines file in ``directory``."""
    from solulab.evals.tasks import arithmetic_items

    data = directory / f"{LOCAL_TASK}.jsonl"
    with open(data, "w") as f:
        for prompt, answer, wrong in arithmetic_items(300):
            choices = sorted([answer, *wrong], key=lambda c: int(c))
            f.write(json.dumps({"question": prompt, "choices": choices,
                                "answer": choices.index(answer)}) + "\n")
    (directory / f"{LOCAL_TASK}.yaml").write_text(
        f"task: {LOCAL_TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {json.dumps(str(data))}\noutput_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        'doc_to_choice: "{{choices}}"\nmetric_list:\n  - metric: acc\n'
        "    aggregation: mean\n    higher_is_better: true\nmetadata:\n  version: 1.0\n")
    return directory


def _requested_tasks(argv: list[str]) -> list[str]:
    names = []
    for i, arg in enumerate(argv):
        if arg == "--tasks":
            for value in argv[i + 1:]:
                if value.startswith("--"):
                    break
                names += [n for n in value.split(",") if n]
        elif arg.startswith("--tasks="):
            names += [n for n in arg.split("=", 1)[1].split(",") if n]
    return names


def check_tasks_offline(names: list[str], include: list[str]) -> None:
    """Load each task as the harness will; a task whose data needs the network is refused by
    name before any model is loaded."""
    from lm_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=include)
    for name in names:
        try:
            get_task_dict([name], manager)
        except Exception as e:  # the harness and datasets raise many kinds; all mean "cannot"
            raise SolulabError(
                f"task {name!r} cannot be loaded offline ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:200] if str(e) else 'no message'}): its dataset is not "
                "in the local Hugging Face cache and solulab downloads nothing. Put it there "
                f"(HF_HOME), or give a local task with --include_path; {LOCAL_TASK} needs "
                "nothing") from None


def main() -> None:
    """The harness's command line, with ``solulab`` registered, offline, with the local task."""
    import os
    import tempfile

    from lm_eval.__main__ import cli_evaluate

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.setdefault(variable, "1")
    with tempfile.TemporaryDirectory() as tmp:
        argv = sys.argv[1:]
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--include_path"]
        include = given or [str(write_local_task(Path(tmp)))]  # the harness takes one path
        try:
            check_tasks_offline(_requested_tasks(argv), include)
        except SolulabError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        sys.argv = ["lm-eval", *argv] + ([] if given else ["--include_path", include[0]])
        cli_evaluate()


if __name__ == "__main__":
    main()
