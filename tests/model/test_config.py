"""NeoXConfig.from_dict: both key styles, token ids from the config, architecture checks."""
from __future__ import annotations

import pytest

from neoxserve.model.config import NeoXConfig, UnsupportedModelError

BASE = dict(architectures=["GPTNeoXForCausalLM"], vocab_size=50688, hidden_size=4096, num_hidden_layers=16,
            num_attention_heads=32, intermediate_size=16384, max_position_embeddings=4096, layer_norm_eps=1e-5,
            use_parallel_residual=True, bos_token_id=0, eos_token_id=0)


def test_transformers4_keys():
    cfg = NeoXConfig.from_dict({**BASE, "rotary_pct": 0.25, "rotary_emb_base": 10000, "torch_dtype": "float16"})
    assert (cfg.head_dim, cfg.rotary_dim, cfg.rotary_emb_base, cfg.torch_dtype) == (128, 32, 10000.0, "float16")


def test_transformers5_keys():
    rope = {"partial_rotary_factor": 0.5, "rope_theta": 500.0, "rope_type": "default"}
    cfg = NeoXConfig.from_dict({**BASE, "rope_parameters": rope, "dtype": "bfloat16"})
    assert (cfg.rotary_pct, cfg.rotary_dim, cfg.rotary_emb_base, cfg.torch_dtype) == (0.5, 64, 500.0, "bfloat16")


def test_token_ids_come_from_the_config():
    cfg = NeoXConfig.from_dict({**BASE, "bos_token_id": 7, "eos_token_id": [9, 10]})
    assert (cfg.bos_token_id, cfg.eos_token_id) == (7, 9)


@pytest.mark.parametrize("arch,message", [("StableLMAlphaForCausalLM", "not supported yet"),
                                          ("LlamaForCausalLM", "'LlamaForCausalLM' is not supported")])
def test_other_architectures_are_refused(arch, message):
    with pytest.raises(UnsupportedModelError, match=message):
        NeoXConfig.from_dict({**BASE, "architectures": [arch]})


@pytest.mark.parametrize("change,message", [({"hidden_act": "relu"}, "hidden_act"),
                                            ({"num_attention_heads": 30}, "not a multiple"),
                                            ({"tie_word_embeddings": True}, "tie_word_embeddings")])
def test_unsupported_variants(change, message):
    with pytest.raises(UnsupportedModelError, match=message):
        NeoXConfig.from_dict({**BASE, **change})


def test_missing_key():
    config = dict(BASE)
    del config["hidden_size"]
    with pytest.raises(UnsupportedModelError, match="missing key 'hidden_size'"):
        NeoXConfig.from_dict(config)
