"""``solulab import`` and ``solulab export``: models between solulab and TransformerLens."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import typer

from solulab.cli.exits import reports_errors
from solulab.errors import SolulabError

FORMATS = ("transformerlens",)
LOADING = ("in TransformerLens 4, cfg = TransformerBridgeConfig.from_dict("
           "json.load(open('config.json'))); bridge = TransformerBridge.boot_native(cfg); "
           "bridge.load_state_dict(convert_tl_checkpoint(torch.load('model_final.pth'), cfg)) "
           "(convert_tl_checkpoint from transformer_lens.conversion_utils); solulab's "
           "blocks.{l}.mlp.hook_mid is the bridge's blocks.{l}.mlp.ln.hook_in")


@reports_errors
def import_command(
    source: str = typer.Argument(..., help="TransformerLens checkpoint directory or hf:ORG/NAME "
                                 "(read from the Hugging Face cache)."),
    out: Path = typer.Argument(..., help="New solulab run directory."),
):
    """Convert a TransformerLens checkpoint into a solulab run that every analysis reads."""
    from solulab.core import hub, transformerlens
    from solulab.core.model import Transformer
    from solulab.io import atomic_write_bytes
    from solulab.runs import rundir

    directory = hub.resolve(source) if hub.is_hub_name(source) else Path(source)
    if not transformerlens.is_checkpoint(directory):
        raise SolulabError(f"{source}: not a TransformerLens checkpoint (config.json and a "
                           "*.pth state dict)")
    if out.exists() and any(out.iterdir()):
        raise SolulabError(f"{out} is not empty: import into a new directory")
    _, fields = transformerlens.read_config(directory)
    tokenizer = hub.find_tokenizer(fields.get("tokenizer_name"), directory)
    model = Transformer.from_pretrained(directory)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.partial-") as tmp:
        model.save_pretrained(tmp)  # all files, then one rename: a killed import leaves no run
        atomic_write_bytes(Path(tmp) / rundir.TOKENIZER, tokenizer.read_bytes())
        rundir.write_record(Path(tmp), {"imported_from": str(source),
                                        "n_params": model.n_params()})
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    typer.echo(f"{source} -> {out} ({model.cfg.n_layers} layers, {model.cfg.act_fn}, "
               f"{model.n_params():,} non-embedding parameters)")
    typer.echo(f"next: solulab corpus build --out CORPUS --tokenizer {out / rundir.TOKENIZER}, "
               f"then solulab neurons collect {out} --corpus CORPUS")


@reports_errors
def export_command(
    run: Path = typer.Argument(..., help="solulab run (or model) directory."),
    out: Path = typer.Argument(..., help="New directory for the exported checkpoint."),
    to: str = typer.Option("transformerlens", help=f"Format: {', '.join(FORMATS)}."),
):
    """Write a run's model as a TransformerLens checkpoint (config.json + model_final.pth)."""
    from solulab.core import transformerlens
    from solulab.core.model import Transformer
    from solulab.runs import rundir
    from solulab.runs.model_card import write_card

    if to not in FORMATS:
        raise typer.BadParameter(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    transformerlens.export(Transformer.from_pretrained(run), out, run / rundir.TOKENIZER)
    write_card(run, out, export=f"A TransformerLens checkpoint of the model: {LOADING}.")
    typer.echo(f"wrote {out}: {LOADING}")
