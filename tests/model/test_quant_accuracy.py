"""Quantized against unquantized, same inputs: 256 positions (a 16-token prefill, then 240 decode steps) on three
model configurations, with the thresholds below; and the check fails when a scale or the group order is wrong.

The models are structured random stand-ins for trained ones (bench/quant_check.py: structured_random_model); the
thresholds leave a margin over the values bench/quant_accuracy.py measures on them, which docs/engine.md
("Quantized weights: accuracy") reports.
"""
from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))   # quant_check: shared with the bench script

from quant_check import (CHECK_CONFIGS, CHECK_POSITIONS, LogitAgreement, check_model, check_token_ids,
                         compare_logits, teacher_forced_logits)
from neoxserve.model.quant_format import QuantConfig
from neoxserve.model.quant_linear import quantize_model

# (max mean KL, min top-1 agreement, min cosine) per quantization
THRESHOLDS = {"int8": (0.005, 0.93, 0.9995), "int4": (0.25, 0.65, 0.98)}
INT8, INT4 = QuantConfig("int8"), QuantConfig("int4", 128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two, and far faster on a loaded machine (OpenMP threads
    spin waiting for each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _passes(agreement: LogitAgreement, method: str) -> bool:
    kl, top1, cosine = THRESHOLDS[method]
    return agreement.mean_kl <= kl and agreement.top1_agreement >= top1 and agreement.mean_cosine >= cosine


@functools.cache
def _reference(config: str) -> Tensor:
    return teacher_forced_logits(check_model(config), check_token_ids())


def _quantized(config: str, quant: QuantConfig):
    return quantize_model(copy.deepcopy(check_model(config)), quant)


@functools.cache
def _agreement(config: str, quant: QuantConfig) -> LogitAgreement:
    return compare_logits(_reference(config), teacher_forced_logits(_quantized(config, quant), check_token_ids()))


@pytest.mark.parametrize("config", list(CHECK_CONFIGS))
@pytest.mark.parametrize("quant", [INT8, INT4], ids=lambda q: q.method)
def test_quantized_model_stays_close_to_the_float_model(quant, config):
    agreement = _agreement(config, quant)
    assert agreement.positions == CHECK_POSITIONS
    assert _passes(agreement, quant.method), f"{quant.describe()} on {config}: {agreement}"


def _corrupt_scale_rows(model) -> None:
    """Every row of one linear gets its neighbour's scale (a scale stored or read in the wrong order)."""
    linear = model.layers[0].mlp.dense_4h_to_h
    linear.weight_scale.copy_(linear.weight_scale.roll(1, 0))


def _corrupt_group_order(model) -> None:
    """Every row of one linear applies its groups' scales and zeros in reverse order."""
    linear = model.layers[0].mlp.dense_4h_to_h
    assert linear.weight_scale.shape[1] > 1, "the linear needs several groups for their order to matter"
    linear.weight_scale.copy_(linear.weight_scale.flip(1))
    linear.weight_zero.copy_(linear.weight_zero.flip(1))


@pytest.mark.parametrize("quant,corrupt", [(INT8, _corrupt_scale_rows), (INT4, _corrupt_scale_rows),
                                           (INT4, _corrupt_group_order)],
                         ids=["int8-scales", "int4-scales", "int4-group-order"])
def test_the_check_fails_for_a_corrupted_scale_or_group_order(quant, corrupt):
    config = next(iter(CHECK_CONFIGS))
    assert _passes(_agreement(config, quant), quant.method)
    quantized = _quantized(config, quant)
    corrupt(quantized)
    agreement = compare_logits(_reference(config), teacher_forced_logits(quantized, check_token_ids()))
    assert not _passes(agreement, quant.method), f"the corruption went unnoticed: {agreement}"
