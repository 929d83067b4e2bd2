"""Every input the engine refuses, with its exact message."""
from __future__ import annotations

import re

import pytest
import torch

from neoxserve.engine.worker.block_manager import BlockManager
from neoxserve.engine.errors import RequestRejected
from neoxserve.engine.worker.sampler import Sampler, SampleRequest
from neoxserve.engine.sampling_params import SamplingParams
from neoxserve.engine.worker.sequence import Sequence


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=0.0), "temperature must be > 0, got 0.0"),
    (dict(temperature=float("nan")), "temperature must be > 0, got nan"),
    (dict(top_k=-1), "top_k must be >= 0, got -1"),
    (dict(top_p=1.5), "top_p must be in [0, 1], got 1.5"),
    (dict(top_p=-0.1), "top_p must be in [0, 1], got -0.1"),
    (dict(penalty_score=0.0), "penalty_score must be > 0, got 0.0"),
    (dict(max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
    (dict(n=0), "n must be >= 1, got 0"),
])
def test_sampling_params_refuse_what_the_sampler_cannot_compute(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SamplingParams(**kwargs)


def test_sampling_params_leave_the_api_ranges_to_the_api():
    """temperature above 1 or a penalty outside [1, 2] is computable; only the API refuses them (SAMPLING_RULES)."""
    params = SamplingParams(temperature=1.5, penalty_score=2.5)
    assert (params.temperature, params.penalty_score) == (1.5, 2.5)


def test_greedy_ignores_the_temperature_range():
    assert SamplingParams(greedy=True, temperature=0.0).greedy


def test_negative_prompt_token_ids_are_rejected(make_engine, demo_loaded):
    engine = make_engine()
    vocab = demo_loaded.config.vocab_size
    with pytest.raises(RequestRejected, match=f"^{re.escape(f'prompt token ids must be in [0, {vocab})')}$"):
        engine.add_request("neg", [5, -1, 7], SamplingParams(greedy=True, max_new_tokens=2))
    assert not engine.has_unfinished()


def test_exact_messages_of_impossible_requests(make_engine, demo_loaded):
    ctx = demo_loaded.config.max_position_embeddings
    engine = make_engine(kv_block_size=16, kv_cache_memory_mb=1)          # 8 blocks of 16 tokens
    with pytest.raises(RequestRejected, match=f"^{re.escape('the prompt is empty')}$"):
        engine.add_request("e", [], SamplingParams())
    with pytest.raises(RequestRejected, match="^" + re.escape(
            f"prompt (10 tokens) + max_new_tokens ({ctx}) = {ctx + 10} exceeds the model's context of {ctx} tokens")
            + "$"):
        engine.add_request("c", [5] * 10, SamplingParams(max_new_tokens=ctx))
    with pytest.raises(RequestRejected, match="^" + re.escape(
            "prompt + max_new_tokens needs 13 KV blocks but the cache has 8 (raise kv_cache_memory_mb)") + "$"):
        engine.add_request("b", [5] * 100, SamplingParams(max_new_tokens=100))
    engine.add_request("a", [5] * 3, SamplingParams(max_new_tokens=10))
    with pytest.raises(RequestRejected, match="^" + re.escape("request id 'a' is already in use") + "$"):
        engine.add_request("a", [5] * 3, SamplingParams(max_new_tokens=10))


def test_a_kv_budget_below_one_block_refuses_to_start(make_engine):
    # demo model: 4 layers x 4 heads x 64 dims x fp32, K and V: 2 MiB per block of 256 tokens
    with pytest.raises(ValueError, match="^" + re.escape(
            f"kv_cache_memory_mb=1 holds no KV block ({2 * 4 * 256 * 4 * 64 * 4} bytes each)") + "$"):
        make_engine(kv_block_size=256, kv_cache_memory_mb=1)


def test_block_manager_refusals():
    with pytest.raises(ValueError, match=r"^the KV cache needs at least one block$"):
        BlockManager(0, 4)
    bm = BlockManager(2, 4)
    seq = Sequence("s", [1, 2, 3], SamplingParams())
    with pytest.raises(RuntimeError, match=r"^out of KV blocks: need 3, 2 free$"):
        bm.allocate(seq, 3)
    assert bm.num_free_blocks == 2 and seq.block_table == []


def test_sampler_refuses_logits_that_do_not_match_the_requests():
    request = SampleRequest(SamplingParams(), [1], 0)
    with pytest.raises(ValueError, match=re.escape("logits (2, 8) do not match 1 requests")):
        Sampler(0).sample(torch.zeros(2, 8), [request])
    with pytest.raises(ValueError, match=re.escape("logits (8,) do not match 1 requests")):
        Sampler(0).sample(torch.zeros(8), [request])
