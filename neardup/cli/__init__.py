"""The ``neardup`` command line: a thin layer over the library.

Each command module builds a config from its options, calls one library
function and saves outputs beside the resolved ``config.yaml``. The library
subpackages never import click or this package.
"""

from __future__ import annotations

import click

from neardup import __version__
from neardup.cli._common import NeardupGroup
from neardup.cli.attack import attack
from neardup.cli.cluster import cluster
from neardup.cli.convert import convert
from neardup.cli.dedup import dedup
from neardup.cli.evaluate import embed_map_cmd, evaluate_retrieval_cmd
from neardup.cli.extract import extract, models
from neardup.cli.finetune import evaluate_cmd, finetune_cmd
from neardup.cli.index import index_group, query_cmd
from neardup.cli.search import plot_cmd, report, search
from neardup.cli.train import train_cmd


@click.group(cls=NeardupGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="neardup")
def main() -> None:
    """Find near-duplicate images: generate attacks, extract features, search and cluster."""


for _command in (attack, extract, models, convert, search, report, plot_cmd, index_group, query_cmd, cluster,
                 finetune_cmd, evaluate_cmd, train_cmd, evaluate_retrieval_cmd, embed_map_cmd, dedup):
    main.add_command(_command)

__all__ = ["main"]
