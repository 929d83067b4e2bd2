"""How many KV blocks the engine allocates: the bytes one block takes and the memory budget for all of them."""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from neoxserve.engine.config import EngineConfig
from neoxserve.model.arith import cdiv
from neoxserve.model.config import NeoXConfig
from neoxserve.model.kv_layout import bytes_per_block

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def num_kv_blocks(model: NeoXConfig, config: EngineConfig, dtype_size: int, device: torch.device) -> int:
    """Blocks that fit the budget (kv_cache_budget); ValueError if not even one does."""
    per_block = bytes_per_block(model, config.kv_block_size, dtype_size)
    per_context = per_block * cdiv(model.max_position_embeddings, config.kv_block_size)
    num_blocks = kv_cache_budget(config, per_context, device) // per_block
    if num_blocks < 1:
        raise ValueError(f"kv_cache_memory_mb={config.kv_cache_memory_mb} holds no KV block ({per_block} bytes each)")
    tokens = num_blocks * config.kv_block_size
    log.info("KV cache: %d blocks of %d tokens (%d tokens, %.0f MB)", num_blocks, config.kv_block_size, tokens,
             num_blocks * per_block / 2**20)
    if tokens < model.max_position_embeddings:
        log.warning("the KV cache holds %d tokens, less than one full context (%d): longer requests are "
                    "rejected; raise kv_cache_memory_mb", tokens, model.max_position_embeddings)
    return num_blocks


def kv_cache_budget(config: EngineConfig, bytes_per_context: int, device: torch.device) -> int:
    """Bytes for the KV cache: `kv_cache_memory_mb` when set; otherwise room for `max_num_seqs` full contexts,
    but at most half the memory still available once the model is loaded (the cache is zeroed up front, so every
    byte of it is resident)."""
    if config.kv_cache_memory_mb:
        return config.kv_cache_memory_mb * 2**20
    return min(config.max_num_seqs * bytes_per_context, available_memory(device) // 2)


def available_memory(device: torch.device) -> int:
    """Free device memory on CUDA; MemAvailable from /proc/meminfo on CPU (else the free physical pages)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
