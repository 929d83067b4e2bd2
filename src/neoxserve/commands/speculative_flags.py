"""Speculative decoding flags, shared by `serve` and `generate` (their values are Settings fields)."""
from __future__ import annotations

import argparse

from .model_flags import setting_choices

SPECULATIVE_FLAGS = ("speculative_method", "num_speculative_tokens", "ngram_min", "ngram_max")


def add_speculative_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speculative-method", dest="speculative_method", choices=setting_choices("speculative_method"),
                   help="speculative decoding (default none); ngram: drafts looked up in each sequence's own prompt "
                        "and output, verified in one step (docs/engine.md)")
    p.add_argument("--num-speculative-tokens", dest="num_speculative_tokens", type=int,
                   help="draft tokens verified per sequence and step, 1-16 (default 4)")
    p.add_argument("--ngram-min", dest="ngram_min", type=int, help="ngram: shortest suffix looked up (default 2)")
    p.add_argument("--ngram-max", dest="ngram_max", type=int, help="ngram: longest suffix looked up (default 4)")
