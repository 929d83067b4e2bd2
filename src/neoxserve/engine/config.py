"""EngineConfig: the engine's own settings, and nothing else of the service's.

Built from the service `Settings` by `commands.engine_config.engine_config` (field names are the same as the
Settings fields they come from) and passed to the engine process as is: plain and picklable, so secrets, the
listening address, moderation and the other HTTP-side settings never reach the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from neoxserve.choices import DEMO_MODEL, DEMO_RANDOM_MODEL, Dtype, Kernels, QuantizationMethod


@dataclass(frozen=True)
class EngineConfig:
    # model
    model: str                     # Hugging Face model directory, DEMO_MODEL or DEMO_RANDOM_MODEL
    data_dir: Path                 # where the demo models are expanded or written (model/demo.py)
    device: str                    # auto, cpu, cuda or cuda:N
    dtype: Dtype
    torch_threads: int             # 0 = torch's default (all cores)
    quantization: QuantizationMethod   # weight-only quantization (model/quant_format.py)
    quantization_group_size: int   # int4: input columns sharing one scale and zero
    kernels: Kernels               # native CPU kernels: auto or a model/kernels VARIANTS name
    # KV cache and scheduler
    kv_cache_memory_mb: int        # 0 = auto (engine/worker/kv_cache.py)
    kv_block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int
    max_waiting_requests: int
    max_queued_tokens: int
    queue_timeout_seconds: float   # 0 = none
    enable_prefix_caching: bool
    # speculative decoding (engine/worker/speculative.py)
    speculative_method: Literal["none", "ngram"]
    num_speculative_tokens: int    # K: draft tokens verified per sequence and step
    ngram_min: int                 # prompt lookup: shortest suffix matched
    ngram_max: int                 # prompt lookup: longest suffix matched

    @property
    def is_demo(self) -> bool:
        return self.model == DEMO_MODEL

    @property
    def is_random_demo(self) -> bool:
        return self.model == DEMO_RANDOM_MODEL

    @property
    def model_name(self) -> str:
        """The model's name: "demo", "demo-random", or the model directory's name."""
        if self.is_demo or self.is_random_demo:
            return self.model
        return Path(self.model).name or self.model
