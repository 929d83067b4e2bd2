"""GPT-NeoX (StableLM-Alpha v1) as a flat-batch module over a paged KV cache.

Shapes: T = new tokens in this step (all sequences flattened), H = hidden, nh = heads, hd = head dim,
rot = rotary dims, I = intermediate, V = vocab. Parameter names follow the Hugging Face checkpoint without the
`gpt_neox.` prefix, except that the fused QKV is stored as [q heads | k heads | v heads] (see loader.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neoxserve.model import kernels, weight_tiles
from neoxserve.model.arith import cdiv
from neoxserve.model.attention import AttentionMetadata, KVCache, paged_attention
from neoxserve.model.config import NeoXConfig


class Linear(nn.Module):
    """y = x W^T + b. The weight is stored in one of three layouts:

    - like nn.Linear ([out, in]);
    - splits=S >= 1: S column blocks of W^T, [S, in, out/S], multiplied by one batched matmul. For float32 on CPU
      (S = torch threads): there MKL runs a one-row product on a single core; as a batch of S blocks it runs on S
      cores: measured on the Pythia-160M shape with 2 threads (bench/bench_decode.py, docs/benchmarks.md), the layer
      linears of one decode step take 9 ms instead of 16 ms, and no row count measured (1-128) is slower than
      nn.Linear. bf16 products are already multi-threaded in the ordinary layout, so bf16 keeps it;
    - bf16_tiles: bfloat16 weights in weight_tiles.py's tiles, float32 activations, multiplied by the native kernel
      (kernels/wq_gemm.cpp). For `--dtype bfloat16` on CPUs without bf16 units (loader.py): half the bytes of float32
      to read per token, float32 arithmetic.

    With `native_gemv` (GPTNeoX.use_native_gemv: a bfloat16 model on a CPU whose kernels have AVX512-BF16), the
    nn.Linear layout multiplies up to kernels.BF16_GEMV_ROWS rows with the native bf16 GEMV, which streams the
    weight once per call; more rows go to PyTorch's bf16 GEMM (oneDNN) as before.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, splits: int = 0,
                 bf16_tiles: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bf16_tiles = bf16_tiles
        self.splits = 0 if bf16_tiles else splits if splits <= 1 or out_features % splits == 0 else 1
        shape: tuple[int, ...]
        if bf16_tiles:
            shape = (cdiv(out_features, weight_tiles.TILE), in_features, weight_tiles.TILE)
        elif self.splits:
            shape = (self.splits, in_features, out_features // self.splits)
        else:
            shape = (out_features, in_features)
        weight = torch.empty(shape).normal_(std=0.02)               # the loader replaces these
        self.weight = nn.Parameter(weight.to(torch.bfloat16) if bf16_tiles else weight)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.native_gemv = False

    def forward(self, x: Tensor) -> Tensor:
        if self.native_gemv and x.shape[0] <= kernels.BF16_GEMV_ROWS and x.dtype == torch.bfloat16:
            out = kernels.ops().bf16_gemv(x.contiguous(), self.weight)
            return out if self.bias is None else out.add_(self.bias)
        if self.bf16_tiles:
            ops = kernels.ops()
            x = x.contiguous()
            if x.shape[0] > kernels.GEMM_ROWS:
                w = self.weight
                out = kernels.expanded_linear(x, w, self.out_features,
                                              lambda t0, t1, n: ops.dequantize(w[t0:t1], None, None, 0, 16, n))
            else:
                out = ops.bf16_linear(x, self.weight, self.out_features)
            return out if self.bias is None else out.add_(self.bias)
        if not self.splits:
            # the bias added on its own: F.linear with a bias runs addmm, which in bf16 on CPU took 13.7 ms per token
            # for the 160M shape's layer linears against 6.0 ms without (issue 9's profile)
            out = F.linear(x, self.weight)
            return out if self.bias is None else out.add_(self.bias)
        T = x.shape[0]
        out = torch.bmm(x.expand(self.splits, T, self.in_features), self.weight)   # [S, T, out/S]
        out = out.transpose(0, 1).reshape(T, self.out_features)                     # [T, out], a fresh tensor
        return out if self.bias is None else out.add_(self.bias)

    def load_layout(self, weight: Tensor) -> Tensor:
        """A checkpoint weight [out, in] in this module's layout (bf16 tiles: in bfloat16 too)."""
        if self.bf16_tiles:
            return weight_tiles.bf16_tiles(weight)
        if not self.splits:
            return weight
        return weight.t().reshape(self.in_features, self.splits, -1).transpose(0, 1)


class Attention(nn.Module):
    def __init__(self, cfg: NeoXConfig, splits: int, bf16_tiles: bool = False):
        super().__init__()
        self.nh, self.hd, self.rot = cfg.num_attention_heads, cfg.head_dim, cfg.rotary_dim
        self.scale = cfg.head_dim ** -0.5
        self.native = False   # paged_attention's native decode kernel (GPTNeoX.use_native_attention sets it)
        self.query_key_value = Linear(cfg.hidden_size, 3 * cfg.hidden_size, splits=splits, bf16_tiles=bf16_tiles)
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size, splits=splits, bf16_tiles=bf16_tiles)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, meta: AttentionMetadata, kv_cache: KVCache) -> Tensor:
        T = x.shape[0]
        qkv = self.query_key_value(x).view(T, 3, self.nh, self.hd)      # [T, 3, nh, hd], fresh buffer
        _rotate_(qkv[:, :2, :, : self.rot], cos, sin)                    # q and k together, in place
        q, k, v = qkv.unbind(1)                                          # [T, nh, hd] each
        out = paged_attention(q, k, v, kv_cache, meta, self.scale, self.native)   # [T, nh, hd]
        return self.dense(out.reshape(T, self.nh * self.hd))            # [T, H]


def _rotate_(x: Tensor, cos: Tensor, sin: Tensor) -> None:
    """Rotary "rotate half" in place on x [T, 2, nh, rot]; cos, sin [T, 1, 1, rot / 2] (the table's two halves are
    equal): x1, x2 = halves; x1 <- x1 cos - x2 sin, x2 <- x2 cos + x1 sin. No concatenated copy of x."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    x1_sin = x1 * sin
    x1.mul_(cos).addcmul_(x2, sin, value=-1.0)
    x2.mul_(cos).add_(x1_sin)


class MLP(nn.Module):
    def __init__(self, cfg: NeoXConfig, splits: int, bf16_tiles: bool = False):
        super().__init__()
        self.dense_h_to_4h = Linear(cfg.hidden_size, cfg.intermediate_size, splits=splits, bf16_tiles=bf16_tiles)
        self.dense_4h_to_h = Linear(cfg.intermediate_size, cfg.hidden_size, splits=splits, bf16_tiles=bf16_tiles)

    def forward(self, x: Tensor) -> Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x)))           # exact (erf) GELU


class Layer(nn.Module):
    def __init__(self, cfg: NeoXConfig, splits: int, bf16_tiles: bool = False):
        super().__init__()
        self.parallel = cfg.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention = Attention(cfg, splits, bf16_tiles)
        self.mlp = MLP(cfg, splits, bf16_tiles)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, meta: AttentionMetadata, kv_cache: KVCache) -> Tensor:
        attn = self.attention(self.input_layernorm(x), cos, sin, meta, kv_cache)
        if self.parallel:  # x + attn(ln1(x)) + mlp(ln2(x)), summed in the reference's order
            return self.mlp(self.post_attention_layernorm(x)) + attn + x
        x = attn + x
        return self.mlp(self.post_attention_layernorm(x)) + x


class GPTNeoX(nn.Module):
    def __init__(self, cfg: NeoXConfig, linear_splits: int = 0, bf16_linears: bool = False,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 native_kernels: bool = False):
        """linear_splits, bf16_linears: the weight layout of every Linear (0, False = as nn.Linear; see Linear;
        model/dtype_policy.py picks it). device, dtype: where the model runs and its parameters' dtype, as they will
        be once loaded (the loader builds it on the meta device). native_kernels: the native CPU kernels are
        selected and built (model/kernels). From these the model sets its attention, bf16 products and K/V dtype."""
        super().__init__()
        self.cfg = cfg
        self.embed_in = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg, linear_splits, bf16_linears) for _ in range(cfg.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.embed_out = Linear(cfg.hidden_size, cfg.vocab_size, bias=False, splits=linear_splits,
                                bf16_tiles=bf16_linears)
        # the K/V cache's dtype when it is not the parameters' (bf16 linears: bfloat16 K/V, half the bytes to read
        # per decode step, widened to float32 by the native decode kernel like the weights)
        self.kv_dtype: torch.dtype | None = torch.bfloat16 if bf16_linears else None
        on_cpu = torch.device(device).type == "cpu"
        self.use_native_attention(on_cpu and dtype == torch.float32 and native_kernels)
        self.use_native_gemv(on_cpu and dtype == torch.bfloat16 and native_kernels and kernels.has_bf16_gemv())
        self.register_buffer("rotary_cos", torch.empty(0), persistent=False)
        self.register_buffer("rotary_sin", torch.empty(0), persistent=False)
        if self.embed_in.weight.device.type != "meta":
            self.init_rotary()

    def init_rotary(self) -> None:
        """(Re)build the cos/sin tables [max_pos, rot / 2] on the parameters' device and dtype (the reference's
        [max_pos, rot] tables repeat these twice).

        Computed in float32 then cast, as the reference does. Call again after materializing a meta-device model.
        """
        cfg, weight = self.cfg, self.embed_in.weight
        rot = cfg.rotary_dim
        inv_freq = 1.0 / cfg.rotary_emb_base ** (torch.arange(0, rot, 2, dtype=torch.int64).float() / rot)
        freqs = torch.outer(torch.arange(cfg.max_position_embeddings, dtype=torch.int64).float(), inv_freq)
        self.rotary_cos = freqs.cos().to(device=weight.device, dtype=weight.dtype)
        self.rotary_sin = freqs.sin().to(device=weight.device, dtype=weight.dtype)

    def cache_dtype(self) -> torch.dtype:
        """The dtype of the K/V cache this model writes."""
        return self.kv_dtype or self.embed_in.weight.dtype

    def use_native_attention(self, enabled: bool) -> None:
        """Decode attention through kernels/wq_gemm.cpp (float32 on CPU, kernels loaded: the constructor checks)."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.native = enabled

    def use_native_gemv(self, enabled: bool) -> None:
        """The few-row products of bfloat16 Linears (nn.Linear layout) through the native bf16 GEMV (the constructor
        turns it on for a bfloat16 model when the selected kernels have it: kernels.has_bf16_gemv)."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.native_gemv = enabled and not module.splits and not module.bf16_tiles

    def forward(self, input_ids: Tensor, positions: Tensor, meta: AttentionMetadata,
                kv_caches: list[KVCache]) -> Tensor:
        """input_ids, positions: [T] -> final-normed hidden states [T, H]."""
        T = input_ids.shape[0]
        cos = self.rotary_cos[positions].view(T, 1, 1, -1)                   # [T, 1, 1, rot / 2], shared by layers
        sin = self.rotary_sin[positions].view(T, 1, 1, -1)
        x = self.embed_in(input_ids)                                       # [T, H]
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, cos, sin, meta, kv_cache)
        return self.final_layer_norm(x)

    def compute_logits(self, hidden: Tensor) -> Tensor:
        """hidden [N, H] (rows to sample from) -> float32 logits [N, V]."""
        return self.embed_out(hidden).float()
