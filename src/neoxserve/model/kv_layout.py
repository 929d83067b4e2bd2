"""The paged K/V cache's layout, torch-free so the engine can size the cache before it allocates anything: per
layer a pair (k_cache, v_cache), each [num_blocks, block_size, num_heads, head_dim]."""
from __future__ import annotations

import math

from neoxserve.model.config import NeoXConfig


def kv_cache_shape(cfg: NeoXConfig, num_blocks: int, block_size: int) -> tuple[int, int, int, int]:
    """The shape of one layer's k_cache (and of its v_cache)."""
    return (num_blocks, block_size, cfg.num_attention_heads, cfg.head_dim)


def bytes_per_block(cfg: NeoXConfig, block_size: int, dtype_size: int) -> int:
    """K and V of `block_size` tokens in every layer."""
    return 2 * cfg.num_hidden_layers * math.prod(kv_cache_shape(cfg, 1, block_size)) * dtype_size
