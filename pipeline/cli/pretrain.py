"""`hyperrec pretrain image|text`: pretrained item-tower encoders for transfer learning.

Thin wrappers over components/pretraining/. The encoder sizes come from the
experiment's config (`--experiment`, `--set model.cnn_filters=...`), so the Trainer of that
experiment can load the result: point `model.pretrained.image` / `model.pretrained.text` at
the output directory.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Tuple

import click

from hyperrec.pipeline.cli.common import EXPERIMENTS, usage_errors
from hyperrec.pipeline.runners import commands as runner_commands

ONLINE_RETAIL_SOURCE = "online_retail"


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


def online_retail_texts(rda_path: str) -> Tuple[List[str], Dict[str, object]]:
    """The product texts of an Online Retail file as the importer writes them (one per
    stock code: its most frequent cleaned description), and where they came from."""
    from hyperrec.data.importers import online_retail
    raw, source = online_retail.read_source(rda_path)
    items, _ = online_retail.build_catalogue(online_retail.clean_lines(raw).lines)
    return sorted(items["description"].astype(str)), {**source, "kind": ONLINE_RETAIL_SOURCE}


def _shared_options(command):
    options = [
        click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
                     help="Directory to write (manifest.json, weights, vocab.txt for text)."),
        click.option("--experiment", type=EXPERIMENTS, default="default",
                     show_default=True, help="Whose encoder sizes (and image size / text "
                     "length) to pretrain."),
        click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE",
                     help="Config override (repeatable), e.g. model.cnn_filters=16,32."),
        click.option("--epochs", type=click.IntRange(min=1), default=None,
                     help="Training epochs (default: 20 for image, 10 for text)."),
        click.option("--seed", type=int, default=42, show_default=True,
                     help="Seed of the held-out split, masking and initialisation."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group("pretrain", context_settings={"help_option_names": ["-h", "--help"]})
def pretrain() -> None:
    """Pretrains the item tower's image or text encoder (model.pretrained.* loads it)."""


@pretrain.command("image")
@click.option("--photos", type=click.Path(exists=True, file_okay=False), required=True,
              help="A folder of class subfolders of JPEG/PNG photos.")
@_shared_options
@usage_errors
def pretrain_image(photos: str, out_dir: str, experiment: str, overrides: Tuple[str, ...],
                   epochs: int, seed: int) -> None:
    """Trains the CNN image encoder to classify the photos; reports held-out accuracy."""
    from hyperrec.components import pretraining
    config = runner_commands.load_config(experiment, overrides)
    _echo(f"pretraining the image encoder (filters {list(config.model.cnn_filters)}, "
          f"{config.model.embedding_dim}-d, {config.data.image_size}px) on {photos}")
    try:
        pretraining.pretrain_image(photos, out_dir, config.model, config.data.image_size,
                                   epochs=epochs or 20, seed=seed, report=_echo)
    except pretraining.PretrainedEncoderError as error:
        raise click.ClickException(str(error)) from error
    _echo(f"wrote {os.path.abspath(out_dir)}: use --set model.pretrained.image="
          f"{os.path.abspath(out_dir)}")


@pretrain.command("text")
@click.option("--rda", type=click.Path(exists=True, dir_okay=False), required=True,
              help="UCI Online Retail (.rda/.rds): its product descriptions.")
@click.option("--max-texts", type=click.IntRange(min=10), default=None,
              help="Use N evenly spaced texts (of the sorted texts), for quick runs.")
@_shared_options
@usage_errors
def pretrain_text(rda: str, max_texts: int, out_dir: str, experiment: str,
                  overrides: Tuple[str, ...], epochs: int, seed: int) -> None:
    """Masked-token pretraining of the Transformer text encoder on product descriptions;
    reports held-out masked-token accuracy against the most-frequent-token baseline."""
    from hyperrec.components import pretraining
    config = runner_commands.load_config(experiment, overrides)
    texts, source = online_retail_texts(rda)
    if max_texts and max_texts < len(texts):
        texts = texts[::len(texts) // max_texts][:max_texts]  # evenly spaced, not one prefix
    _echo(f"pretraining the text encoder ({config.model.text_embedding_dim}-d, "
          f"{config.model.text_layers} layer(s), {config.transform.text_max_tokens} tokens) "
          f"on {len(texts)} product texts of {rda}")
    try:
        pretraining.pretrain_text(texts, out_dir, config.model,
                                  config.transform.text_max_tokens,
                                  config.transform.text_vocab_size, epochs=epochs or 10,
                                  min_frequency=config.transform.text_min_frequency,
                                  seed=seed, source=source, report=_echo)
    except pretraining.PretrainedEncoderError as error:
        raise click.ClickException(str(error)) from error
    _echo(f"wrote {os.path.abspath(out_dir)}: use --set model.pretrained.text="
          f"{os.path.abspath(out_dir)}")


GROUP = "Pretrain"
COMMANDS = (pretrain,)
