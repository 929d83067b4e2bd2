"""The tile layouts of kernels/wq_gemm.cpp's linears, and their inverses.

A tile interleaves the weights of 8 consecutive output rows block by block: [N/8, K/blk, 8, blk], so the kernel
reads one contiguous stream per tile (wq_gemm.cpp says why). The output rows are padded to a multiple of 8 with
zero rows; the kernels never write them out.

- int8:  quant_format's int8 weight [N, K] -> int8 [N/8, K/32, 8, 32]; the scale [N] stays as it is.
- int4:  quant_format's nibbles [N, K/2] -> uint8 [N/8, K/64, 8, 32], byte j of a row's 32 holding column j of
         block 2i in the low nibble and column j of block 2i + 1 in the high nibble; scale and zero
         [N, K/G] -> [N/8, K/G, 8].
- bf16:  a float weight [N, K] -> bfloat16 [N/8, K, 8], k-major: the 8 rows' weights of column k side by side
         (the kernel broadcasts x[m, k] against them; wq_gemm.cpp).
"""
from __future__ import annotations

import torch
from torch import Tensor

from neoxserve.model.arith import cdiv
from neoxserve.model.quant_format import pack_nibbles, unpack_nibbles

TILE = 8


def _pad_rows(t: Tensor) -> Tensor:
    extra = cdiv(t.shape[0], TILE) * TILE - t.shape[0]
    return t if not extra else torch.cat((t, t.new_zeros((extra, *t.shape[1:]))))


def _tile(rows: Tensor, block: int) -> Tensor:
    """[N, K] -> [N/8, K/block, 8, block] (rows padded)."""
    rows = _pad_rows(rows)
    n, k = rows.shape
    return rows.view(n // TILE, TILE, k // block, block).transpose(1, 2).contiguous()


def _untile(tiles: Tensor, n: int) -> Tensor:
    """The inverse of _tile: [N/8, K/block, 8, block] -> [N, K]."""
    t, blocks, _, block = tiles.shape
    return tiles.transpose(1, 2).reshape(t * TILE, blocks * block)[:n].contiguous()


def int8_tiles(weight: Tensor) -> Tensor:
    return _tile(weight, 32)


def int8_untiled(tiles: Tensor, n: int) -> Tensor:
    return _untile(tiles, n)


def int4_tiles(nibbles: Tensor) -> Tensor:
    levels = unpack_nibbles(nibbles)                                   # [N, K] values 0..15
    n, k = levels.shape
    pairs = levels.view(n, k // 64, 2, 32)
    return _tile((pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n, k // 2), 32)


def int4_untiled(tiles: Tensor, n: int) -> Tensor:
    packed = _untile(tiles, n).view(n, -1, 32)                         # [N, K/64, 32]
    levels = torch.stack((packed & 15, packed >> 4), dim=2)            # [N, K/64, 2, 32]
    return pack_nibbles(levels.reshape(n, -1))


def group_tiles(values: Tensor) -> Tensor:
    """Per-group scale or zero [N, G] -> [N/8, G, 8]."""
    values = _pad_rows(values)
    return values.view(values.shape[0] // TILE, TILE, -1).transpose(1, 2).contiguous()


def group_untiled(tiles: Tensor, n: int) -> Tensor:
    """[N/8, G, 8] -> [N, G]; also the inverse of bf16_tiles ([N/8, K, 8], the same interleaving)."""
    return tiles.transpose(1, 2).reshape(-1, tiles.shape[1])[:n].contiguous()


def bf16_tiles(weight: Tensor) -> Tensor:
    rows = _pad_rows(weight.to(torch.bfloat16))
    return rows.view(rows.shape[0] // TILE, TILE, rows.shape[1]).transpose(1, 2).contiguous()



def int8_block_sums(tiles: Tensor, block: int) -> Tensor:
    """-128 times each row's sum over each block of `block` columns of int8 tiles: float32 [N/8, K/block, 8], the
    correction int8_gemm adds for taking x as xq + 128 (wq_gemm.cpp)."""
    t, blocks, _, b = tiles.shape
    per = block // b
    sums = tiles.view(t, blocks // per, per, TILE, b).sum(dim=(2, 4), dtype=torch.int32)
    return (sums * -128).to(torch.float32).contiguous()
