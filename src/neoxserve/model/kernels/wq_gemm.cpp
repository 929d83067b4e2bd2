// CPU kernels for x86 with AVX2 (neoxserve/model/kernels/__init__.py builds this file): weight-only linears
// (int8, int4, and bfloat16 weights with float32 arithmetic), and decode attention straight out of the paged KV
// cache.
//
// Why: on AVX2 CPUs PyTorch's own weight-only kernels (_weight_int8pack_mm, _weight_int4pack_mm_for_cpu) and its
// bfloat16 products run several times slower than a plain float32 product of the same shape (docs/engine.md,
// "Quantized weights"). A decode step is bound by reading the weights, so these kernels read each weight byte
// once per call, in one sequential stream, and spend as few instructions per byte as they can:
//
//   * Tiles: the weights of 8 consecutive output rows are interleaved block by block ([N/8][K/blk][8][blk]), so a
//     tile is one contiguous stream (the hardware prefetcher sees one stream instead of 8), each activation block
//     is loaded once for 8 rows, and the 8 independent accumulators hide the FMA latency. The loader packs
//     quant_format's portable layout into tiles (quant_linear.py); N is padded to a multiple of 8 with zero rows
//     that are never written out.
//   * int8 / int4: the activations x [M, K] (float32) are quantized per block of 32 along K (xq = round(x / d),
//     d = max|x| / 127) and each block's product is an 8-bit dot product (vpmaddubsw + vpmaddwd: 32 products in
//     two instructions) scaled by d and the weight's scale, as llama.cpp does on the same CPUs.
//     int4 tiles hold two blocks per 32 bytes: block 2j in the low nibbles, block 2j + 1 in the high nibbles, so
//     one load and two masks give 64 levels. With w = (q - 8) s + z (scale s and zero z per group of G columns),
//     sum_k w_k x_k = sum_g s_g sum_(b in g) d_b (q_b . xq_b) + sum_g (z_g - 8 s_g) X_g, X_g the exact sum of x
//     over group g.
//   * bf16: a bfloat16 is the top half of a float32, so widening is a shift; products and sums are float32.
//
// One source, one build per instruction set (kernels/__init__.py: VARIANTS): each build gets its own -m flags and
// registers its ops under its own namespace (NEOX_NS, e.g. torch.ops.neoxserve_avx512_vnni), so that every variant
// the CPU can run may be loaded side by side in one process and a variant the CPU lacks is never loaded. Code for a
// wider instruction set sits behind the compiler's own macros (__AVX512BW__, __AVX512VNNI__, __AVX512BF16__):
//   * AVX-512 (F/BW/VL): the int8 / int4 dot products on 64 bytes (two tile rows) per instruction;
//     with VNNI one vpdpbusd does the u8 x s8 multiply-add that takes vpmaddubsw + vpmaddwd otherwise.
//   * AVX512-BF16: bf16_gemv, bfloat16 weights [N, K] as nn.Linear holds them times bfloat16 activations, vdpbf16ps
//     (32 products per instruction, float32 sums): the decode rows of a bfloat16 model on CPUs with bf16 units.
//
// Work is split over tiles with at::parallel_for. The file is compiled with -fopenmp (kernels/__init__.py) so that
// at::parallel_for really runs in parallel, in PyTorch's own OpenMP runtime (torch ships libgomp.so.1, which is
// already loaded when this library is, so no second runtime competes for the cores).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifndef NEOX_NS
#define NEOX_NS neoxserve
#endif
// TORCH_LIBRARY pastes its namespace argument: one more level of macro expands NEOX_NS first.
#define NEOX_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)
#define NEOX_LIBRARY_IMPL(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)
#define NEOX_STR2(x) #x
#define NEOX_STR(x) NEOX_STR2(x)

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define NEOX_AVX512 1
#endif

namespace {

// The instruction sets this build's kernels use, for the tests and the start-up log.
std::string features() {
  std::string f = "avx2";
#ifdef NEOX_AVX512
  f += ",avx512";
#endif
#ifdef __AVX512VNNI__
  f += ",avx512_vnni";
#endif
#ifdef __AVX512BF16__
  f += ",avx512_bf16";
#endif
  return f;
}

constexpr int64_t QK = 32;        // activation block (int8 / int4)
constexpr int64_t TILE = 8;       // output rows interleaved in one tile
constexpr int64_t PREFETCH = 512; // bytes ahead of the current read position (measured: 512 ~ 2048 > none)

inline int64_t ceil_tiles(int64_t n) { return (n + TILE - 1) / TILE; }

// Accumulators: the arrays of __m256 accumulators below are zeroed by an indexed, unrolled loop. A range-for made
// GCC 12 keep the array in memory and store every accumulator to the stack on every iteration (3x slower); passing
// the array to a helper risks the same, so each kernel spells the loop out.

// The four cache lines of a 256-byte tile block, PREFETCH bytes ahead of p.
inline void prefetch_block(const void* p) {
  const char* c = static_cast<const char*>(p) + PREFETCH;
  for (int line = 0; line < 4; ++line) _mm_prefetch(c + 64 * line, _MM_HINT_T0);
}

// x [M, K] -> xq int8 [M, K] and d [M, K/32] (the scale of each block).
void quantize_activations(const float* x, int64_t M, int64_t K, int8_t* xq, float* d) {
  const int64_t nb = K / QK;
  at::parallel_for(0, M * nb, 256, [&](int64_t begin, int64_t end) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    for (int64_t i = begin; i < end; ++i) {
      const float* src = x + (i / nb) * K + (i % nb) * QK;
      __m256 v[4];
      __m256 amax = _mm256_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        v[j] = _mm256_loadu_ps(src + 8 * j);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[j]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float maxabs = _mm_cvtss_f32(m4);
      d[i] = maxabs / 127.0f;
      const __m256 inv = _mm256_set1_ps(maxabs > 0.0f ? 127.0f / maxabs : 0.0f);
      __m256i r[4];
      for (int j = 0; j < 4; ++j)
        r[j] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_FROUND_TO_NEAREST_INT |
                                                  _MM_FROUND_NO_EXC));
      // int32 x 32 -> int8 x 32 in order: packs interleave 128-bit lanes, the permute puts them back
      const __m256i w01 = _mm256_packs_epi32(r[0], r[1]), w23 = _mm256_packs_epi32(r[2], r[3]);
      const __m256i b = _mm256_packs_epi16(w01, w23);
      const __m256i ordered = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(xq + i * QK), ordered);
    }
  });
}

// The 8 sums of 8 accumulators, lane r = sum of acc[r].
inline __m256 reduce8(const __m256* acc) {
  const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
  const __m256 s45 = _mm256_hadd_ps(acc[4], acc[5]), s67 = _mm256_hadd_ps(acc[6], acc[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Rows n0..n0+7 of one output row: all 8 when the tile is full, else only the real ones.
inline void store_tile(float* out, int64_t n0, int64_t N, __m256 v) {
  if (n0 + TILE <= N) {
    _mm256_storeu_ps(out + n0, v);
  } else {
    alignas(32) float tmp[TILE];
    _mm256_store_ps(tmp, v);
    for (int64_t r = 0; n0 + r < N; ++r) out[n0 + r] = tmp[r];
  }
}

#ifdef NEOX_AVX512
// Sums of 4 adjacent u8 x s8 products in each int32 lane.
inline __m512i dot_u8s8(__m512i u, __m512i s) {
#ifdef __AVX512VNNI__
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

// acc[j] holds tile rows 2j (lanes 0-7) and 2j + 1 (lanes 8-15): the 8 row sums, lane r = row r.
inline __m256 reduce8_pairs(const __m512* acc) {
  __m256 halves[TILE];
  for (int j = 0; j < 4; ++j) {
    halves[2 * j] = _mm512_castps512_ps256(acc[j]);
    halves[2 * j + 1] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[j]), 1));
  }
  return reduce8(halves);
}

// The 32 bytes at p in both halves of a 512-bit register (one activation block against two tile rows).
inline __m512i broadcast_block(const int8_t* p) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
#endif

void check_activations(const at::Tensor& x, int64_t K, int64_t multiple, const char* op) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              op, ": x must be a contiguous float32 CPU matrix");
  TORCH_CHECK(x.size(1) == K && K % multiple == 0, op, ": x has ", x.size(1), " columns, the weight ", K,
              " (a multiple of ", multiple, " is needed)");
}

void check_tiles(const at::Tensor& w, int64_t N, at::ScalarType type, const char* op) {
  TORCH_CHECK(w.dim() == 4 && w.scalar_type() == type && w.is_contiguous() && w.size(0) == ceil_tiles(N) &&
              w.size(2) == TILE, op, ": weight must be contiguous tiles [", ceil_tiles(N), ", blocks, 8, bytes] "
              "of ", c10::toString(type));
}

// Tile grain: each thread takes a run of whole tiles (parallel_for splits [0, tiles) into at most one chunk per
// thread when the grain is small enough).
constexpr int64_t TILE_GRAIN = 4;

// ---- int8: weight [N/8, K/32, 8, 32] int8, scale [N] float32 ---------------------------------------------------

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  const int64_t N = scale.numel(), K = w.size(1) * QK, M = x.size(0);
  check_activations(x, K, QK, "int8_linear");
  check_tiles(w, N, at::kChar, "int8_linear");
  TORCH_CHECK(w.size(3) == QK && scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "int8_linear: blocks of 32 and a float32 scale [N] needed");
  const int64_t nb = K / QK;
  std::vector<int8_t> xq(M * K);
  std::vector<float> d(M * nb);
  quantize_activations(x.data_ptr<float>(), M, K, xq.data(), d.data());
  at::Tensor y = at::empty({M, N}, x.options());
  float* out = y.data_ptr<float>();
  const int8_t* W = w.data_ptr<int8_t>();
  const float* S = scale.data_ptr<float>();
  at::parallel_for(0, ceil_tiles(N), TILE_GRAIN, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t t = begin; t < end; ++t) {
      const int8_t* Wt = W + t * nb * TILE * QK;
      const int64_t n0 = t * TILE;
      alignas(32) float st[TILE] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t r = 0; r < TILE && n0 + r < N; ++r) st[r] = S[n0 + r];
      const __m256 s8 = _mm256_load_ps(st);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xm = xq.data() + m * K;
        const float* dm = d.data() + m * nb;
#ifdef NEOX_AVX512
        // two tile rows per register; |x| times the weight with x's sign (vpdpbusd multiplies u8 by s8)
        __m512 acc[4];
#pragma GCC unroll 4
        for (size_t i = 0; i < sizeof(acc) / sizeof(acc[0]); ++i) acc[i] = _mm512_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* wb = Wt + b * TILE * QK;
          prefetch_block(wb);
          const __m512i xv = broadcast_block(xm + b * QK);
          const __mmask64 neg = _mm512_movepi8_mask(xv);
          const __m512i ax = _mm512_abs_epi8(xv);
          const __m512 db = _mm512_set1_ps(dm[b]);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const __m512i wv = _mm512_loadu_si512(wb + j * 2 * QK);
            const __m512i sw = _mm512_mask_sub_epi8(wv, neg, _mm512_setzero_si512(), wv);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_u8s8(ax, sw)), db, acc[j]);
          }
        }
        store_tile(out + m * N, n0, N, _mm256_mul_ps(reduce8_pairs(acc), s8));
#else
        __m256 acc[TILE];
        #pragma GCC unroll 8  // keeps acc in registers: see "Accumulators" at the top
        for (size_t i = 0; i < sizeof(acc) / sizeof(acc[0]); ++i) acc[i] = _mm256_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* wb = Wt + b * TILE * QK;
          prefetch_block(wb);
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + b * QK));
          const __m256i ax = _mm256_sign_epi8(xv, xv);
          const __m256 db = _mm256_set1_ps(dm[b]);
#pragma GCC unroll 8
          for (int64_t r = 0; r < TILE; ++r) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + r * QK));
            const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv, xv)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), db, acc[r]);
          }
        }
        store_tile(out + m * N, n0, N, _mm256_mul_ps(reduce8(acc), s8));
#endif
      }
    }
  });
  return y;
}

// ---- int4: weight [N/8, K/64, 8, 32] uint8, scale and zero [N/8, K/G, 8] float32 --------------------------------

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                       int64_t group, int64_t N) {
  const int64_t K = w.size(1) * 2 * QK, M = x.size(0);
  check_activations(x, K, 2 * QK, "int4_linear");
  check_tiles(w, N, at::kByte, "int4_linear");
  TORCH_CHECK(w.size(3) == QK && group % QK == 0 && K % group == 0, "int4_linear: group size ", group,
              " must be a multiple of 32 dividing ", K);
  const int64_t G = K / group, nb = K / QK;
  for (const at::Tensor* t : {&scale, &zero})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 3 &&
                t->size(0) == ceil_tiles(N) && t->size(1) == G && t->size(2) == TILE,
                "int4_linear: scale and zero must be float32 [N/8, K / group, 8]");
  std::vector<int8_t> xq(M * K);
  std::vector<float> d(M * nb);
  const float* X = x.data_ptr<float>();
  quantize_activations(X, M, K, xq.data(), d.data());
  std::vector<float> xsum(M * G);   // X_g: the exact sum of x over each group
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      __m256 s = _mm256_setzero_ps();
      for (int64_t k = g * group; k < (g + 1) * group; k += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(X + m * K + k));
      xsum[m * G + g] = hsum(s);
    }
  at::Tensor y = at::empty({M, N}, x.options());
  float* out = y.data_ptr<float>();
  const uint8_t* W = w.data_ptr<uint8_t>();
  const float* S = scale.data_ptr<float>();
  const float* Z = zero.data_ptr<float>();
  const int64_t pairs = nb / 2;
  at::parallel_for(0, ceil_tiles(N), TILE_GRAIN, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);
    [[maybe_unused]] const __m256i low = _mm256_set1_epi8(0x0F);
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* Wt = W + t * pairs * TILE * QK;
      const float* St = S + t * G * TILE;
      const float* Zt = Z + t * G * TILE;
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xm = xq.data() + m * K;
        const float* dm = d.data() + m * nb;
        __m256 tail = _mm256_setzero_ps();
        for (int64_t g = 0; g < G; ++g) {
          const float xg = xsum[m * G + g];
          tail = _mm256_fmadd_ps(_mm256_loadu_ps(Zt + g * TILE), _mm256_set1_ps(xg), tail);
          tail = _mm256_fmadd_ps(_mm256_loadu_ps(St + g * TILE), _mm256_set1_ps(-8.0f * xg), tail);
        }
#ifdef NEOX_AVX512
        // d_b is the same for every row, the group's scale is not: a group's blocks are summed with d_b alone and
        // the sum is scaled by the 8 rows' s_g when the group ends (flush), spread over the row pairs by a permute
        __m512 acc2[4], gacc[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) { acc2[j] = _mm512_setzero_ps(); gacc[j] = _mm512_setzero_ps(); }
        const __m512i low512 = _mm512_set1_epi8(0x0F);
        auto flush = [&](int64_t g) {
          const __m512 s = _mm512_castps256_ps512(_mm256_loadu_ps(St + g * TILE));
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const __m512i idx = _mm512_set_epi32(2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1, 2 * j + 1,
                                                 2 * j + 1, 2 * j + 1, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j, 2 * j,
                                                 2 * j, 2 * j);
            acc2[j] = _mm512_fmadd_ps(gacc[j], _mm512_permutexvar_ps(idx, s), acc2[j]);
            gacc[j] = _mm512_setzero_ps();
          }
        };
        for (int64_t p = 0; p < pairs; ++p) {
          const uint8_t* wb = Wt + p * TILE * QK;
          prefetch_block(wb);
          const int64_t b0 = 2 * p, b1 = 2 * p + 1;
          const __m512i x0 = broadcast_block(xm + b0 * QK), x1 = broadcast_block(xm + b1 * QK);
          __m512i bytes[4];
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) bytes[j] = _mm512_loadu_si512(wb + j * 2 * QK);
          const __m512 d0 = _mm512_set1_ps(dm[b0]), d1 = _mm512_set1_ps(dm[b1]);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j)
            gacc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_u8s8(_mm512_and_si512(bytes[j], low512), x0)), d0,
                                      gacc[j]);
          if ((b0 + 1) * QK % group == 0) flush(b0 * QK / group);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j)
            gacc[j] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(dot_u8s8(_mm512_and_si512(_mm512_srli_epi16(bytes[j], 4), low512), x1)), d1,
                gacc[j]);
          if ((b1 + 1) * QK % group == 0) flush(b1 * QK / group);
        }
        store_tile(out + m * N, t * TILE, N, _mm256_add_ps(reduce8_pairs(acc2), tail));
#else
        __m256 acc[TILE];
        #pragma GCC unroll 8  // keeps acc in registers: see "Accumulators" at the top
        for (size_t i = 0; i < sizeof(acc) / sizeof(acc[0]); ++i) acc[i] = _mm256_setzero_ps();
        for (int64_t p = 0; p < pairs; ++p) {
          const uint8_t* wb = Wt + p * TILE * QK;
          prefetch_block(wb);
          const int64_t b0 = 2 * p, b1 = 2 * p + 1;
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + b0 * QK));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + b1 * QK));
          // per row: d_b * s_(row, group of b), for the two blocks
          alignas(32) float f0[TILE], f1[TILE];
          _mm256_store_ps(f0, _mm256_mul_ps(_mm256_loadu_ps(St + (b0 * QK / group) * TILE), _mm256_set1_ps(dm[b0])));
          _mm256_store_ps(f1, _mm256_mul_ps(_mm256_loadu_ps(St + (b1 * QK / group) * TILE), _mm256_set1_ps(dm[b1])));
#pragma GCC unroll 8
          for (int64_t r = 0; r < TILE; ++r) {
            const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + r * QK));
            const __m256i q0 = _mm256_and_si256(bytes, low);
            const __m256i q1 = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low);
            const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(q0, x0), ones);
            const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(q1, x1), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_broadcast_ss(f0 + r), acc[r]);
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_broadcast_ss(f1 + r), acc[r]);
          }
        }
        store_tile(out + m * N, t * TILE, N, _mm256_add_ps(reduce8(acc), tail));
#endif
      }
    }
  });
  return y;
}

// ---- int8 / int4 GEMM over the same tiles, for many rows (prefill, batched decode): AVX512-VNNI builds ---------
// The dot-product kernels above convert every block's 16 int32 lanes to float and scale them (d_b differs per block
// of 32), three instructions per vpdpbusd, and read the weights once per row of x. For many rows this GEMM instead:
//   * quantizes x per block of F columns of each row (int8: F = `block`, a kernel argument; int4: F = the weight's
//     group), so the int32 sums run over F / 32 blocks before one conversion and one FMA (int4: scaled by the
//     group's 16-lane weight scales as well);
//   * takes MR = 8 rows of x at once against one register of weights (two tile rows x 32 columns): one weight load
//     (int4: and one nibble mask) serves 8 vpdpbusd;
//   * int8 weights are signed, and vpdpbusd multiplies u8 by s8: x goes in as xq + 128 (u8) and the excess
//     128 * sum(w over the block) comes off at the end through `colsum` ([N/8, K/F, 8], -128 times each row's sum
//     over each block, computed once at load: quant_linear.py), sum_b d_b colsum_b per output, like int4's zero
//     term: y = s_n (sum_b d_b q_b.(xq_b + 128) + sum_b d_b colsum_b). int4 levels are already u8 (0..15).
// Blocking: each thread takes a run of tiles; rows of x go in chunks whose quantized rows stay in L2 (XCHUNK bytes)
// while the thread's tiles pass; within a chunk a tile meets MR rows at a time, one tile-row pair at a time.
#ifdef __AVX512VNNI__
constexpr int64_t MR = 8;
constexpr int64_t XCHUNK = 256 * 1024;

// x [M, K] -> per block of F columns of each row: q = round(x / d), d = max|x| / 127, stored as q + 128 (u8,
// offset) or q (s8); d [M, K/F]; sums [M, K/F], the exact sums of x over each block, and qsums, d times the sums
// of q (both when not null).
void quantize_rows(const float* x, int64_t M, int64_t K, int64_t F, bool offset, uint8_t* xq, float* d,
                   float* sums, float* qsums) {
  const int64_t G = K / F;
  at::parallel_for(0, M * G, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* src = x + (i / G) * K + (i % G) * F;
      __m512 amax = _mm512_setzero_ps(), sum = _mm512_setzero_ps();
      for (int64_t k = 0; k < F; k += 16) {
        const __m512 v = _mm512_loadu_ps(src + k);
        amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        sum = _mm512_add_ps(sum, v);
      }
      const float mx = _mm512_reduce_max_ps(amax);
      d[i] = mx / 127.0f;
      if (sums) sums[i] = _mm512_reduce_add_ps(sum);
      const __m512 inv = _mm512_set1_ps(mx > 0.0f ? 127.0f / mx : 0.0f);
      uint8_t* dst = xq + (i / G) * K + (i % G) * F;
      const __m128i flip = _mm_set1_epi8(offset ? static_cast<char>(0x80) : 0);
      __m512i qsum = _mm512_setzero_si512();
      for (int64_t k = 0; k < F; k += 16) {
        const __m512i r = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + k), inv),
                                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        qsum = _mm512_add_epi32(qsum, r);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm_xor_si128(_mm512_cvtsepi32_epi8(r), flip));
      }
      if (qsums) qsums[i] = d[i] * static_cast<float>(_mm512_reduce_add_epi32(qsum));
    }
  });
}

inline __m512i broadcast_u8(const uint8_t* p) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Tile rows 2j and 2j + 1 against R rows of x (xq rows of K bytes): res[m * 8 + 2j (+1)] = the pair's sums.
// Wt: the tile; d: the rows' block scales [R][G]; St: int4, the tile's scales [G][8].
template <bool INT4, int R>
inline void gemm_pair(const uint8_t* Wt, int j, const uint8_t* xq, int64_t K, int64_t F, const float* d, int64_t G,
                      const float* St, float* res) {
  __m512 accf[R];
#pragma GCC unroll 8
  for (int m = 0; m < R; ++m) accf[m] = _mm512_setzero_ps();
  const int64_t bpg = F / QK;
  [[maybe_unused]] const __m512i low = _mm512_set1_epi8(0x0F);
  for (int64_t g = 0; g < G; ++g) {
    __m512i acci[R];
#pragma GCC unroll 8
    for (int m = 0; m < R; ++m) acci[m] = _mm512_setzero_si512();
    for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
      __m512i wv;
      if constexpr (INT4) {
        const __m512i bytes = _mm512_loadu_si512(Wt + ((b >> 1) * TILE + 2 * j) * QK);
        wv = _mm512_and_si512((b & 1) ? _mm512_srli_epi16(bytes, 4) : bytes, low);
      } else {
        wv = _mm512_loadu_si512(Wt + (b * TILE + 2 * j) * QK);
      }
#pragma GCC unroll 8
      for (int m = 0; m < R; ++m) {
        const __m512i xv = broadcast_u8(xq + m * K + b * QK);
        acci[m] = INT4 ? _mm512_dpbusd_epi32(acci[m], wv, xv) : _mm512_dpbusd_epi32(acci[m], xv, wv);
      }
    }
    __m512 s;
    if constexpr (INT4)
      s = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(St[g * TILE + 2 * j])),
                                              _mm256_castps_pd(_mm256_set1_ps(St[g * TILE + 2 * j + 1])), 1));
#pragma GCC unroll 8
    for (int m = 0; m < R; ++m) {
      const __m512 f = INT4 ? _mm512_mul_ps(s, _mm512_set1_ps(d[m * G + g])) : _mm512_set1_ps(d[m * G + g]);
      accf[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[m]), f, accf[m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < R; ++m) {
    res[m * TILE + 2 * j] = hsum(_mm512_castps512_ps256(accf[m]));
    res[m * TILE + 2 * j + 1] = hsum(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(accf[m]), 1)));
  }
}

// R rows of x against tile t: out rows m0.. (row stride N), columns n0..n0+7. C: int8, the tile's colsum [G][8];
// s8: int8, the 8 rows' scales. sums: int4, the rows' exact block sums [R][G] and then d times the sums of q
// [R][G] (qs); St, Zt: int4 scales, zeros [G][8]. int4's -8 s_g term goes through the same quantized x as the
// levels, so the activation error meets the centred (q - 8) s_g, not the levels q s_g (up to twice as large).
template <bool INT4, int R>
void gemm_tile(const uint8_t* Wt, const uint8_t* xq, int64_t K, int64_t F, const float* d, const float* sums,
               const float* qs, int64_t G, const float* St, const float* Zt, const float* C, __m256 s8, float* out, int64_t N,
               int64_t n0) {
  alignas(64) float res[R * TILE];
  for (int j = 0; j < 4; ++j) gemm_pair<INT4, R>(Wt, j, xq, K, F, d, G, St, res);
  for (int m = 0; m < R; ++m) {
    __m256 tail = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      if constexpr (INT4) {
        const float xg = sums[m * G + g];
        tail = _mm256_fmadd_ps(_mm256_loadu_ps(Zt + g * TILE), _mm256_set1_ps(xg), tail);
        tail = _mm256_fmadd_ps(_mm256_loadu_ps(St + g * TILE), _mm256_set1_ps(-8.0f * qs[m * G + g]), tail);
      } else {
        tail = _mm256_fmadd_ps(_mm256_loadu_ps(C + g * TILE), _mm256_set1_ps(d[m * G + g]), tail);
      }
    }
    __m256 v = _mm256_add_ps(_mm256_load_ps(res + m * TILE), tail);
    if constexpr (!INT4) v = _mm256_mul_ps(v, s8);
    store_tile(out + m * N, n0, N, v);
  }
}

template <bool INT4>
void gemm_rows(int64_t rows, const uint8_t* Wt, const uint8_t* xq, int64_t K, int64_t F, const float* d,
               const float* sums, const float* qs, int64_t G, const float* St, const float* Zt, const float* C, __m256 s8,
               float* out, int64_t N, int64_t n0) {
  switch (rows) {
#define NEOX_GEMM_CASE(r) \
    case r: gemm_tile<INT4, r>(Wt, xq, K, F, d, sums, qs, G, St, Zt, C, s8, out, N, n0); break;
    NEOX_GEMM_CASE(1) NEOX_GEMM_CASE(2) NEOX_GEMM_CASE(3) NEOX_GEMM_CASE(4)
    NEOX_GEMM_CASE(5) NEOX_GEMM_CASE(6) NEOX_GEMM_CASE(7)
#undef NEOX_GEMM_CASE
    default: gemm_tile<INT4, MR>(Wt, xq, K, F, d, sums, qs, G, St, Zt, C, s8, out, N, n0); break;
  }
}

template <bool INT4>
void gemm_impl(const uint8_t* W, const uint8_t* xq, int64_t M, int64_t K, int64_t N, int64_t F, const float* d,
               const float* sums, const float* qs, const float* S, const float* Z, const float* C, float* out) {
  const int64_t G = K / F, tile_bytes = TILE * (INT4 ? K / 2 : K);
  const int64_t chunk = std::max<int64_t>(MR, XCHUNK / K / MR * MR);
  at::parallel_for(0, ceil_tiles(N), TILE_GRAIN, [&](int64_t begin, int64_t end) {
    for (int64_t c0 = 0; c0 < M; c0 += chunk)
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n0 = t * TILE;
        alignas(32) float st[TILE] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        if (!INT4)
          for (int64_t r = 0; r < TILE && n0 + r < N; ++r) st[r] = S[n0 + r];
        const __m256 s8 = _mm256_load_ps(st);
        const float* St = INT4 ? S + t * G * TILE : nullptr;
        const float* Zt = INT4 ? Z + t * G * TILE : nullptr;
        const float* Ct = INT4 ? nullptr : C + t * G * TILE;
        for (int64_t m0 = c0; m0 < std::min(M, c0 + chunk); m0 += MR)
          gemm_rows<INT4>(std::min(MR, M - m0), W + t * tile_bytes, xq + m0 * K, K, F, d + m0 * G,
                          sums ? sums + m0 * G : nullptr, qs ? qs + m0 * G : nullptr, G, St, Zt, Ct, s8, out + m0 * N, N, n0);
      }
  });
}
#endif

at::Tensor int8_gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, const at::Tensor& colsum,
                     int64_t block) {
  const int64_t N = scale.numel(), K = w.size(1) * QK, M = x.size(0);
  check_activations(x, K, QK, "int8_gemm");
  check_tiles(w, N, at::kChar, "int8_gemm");
  TORCH_CHECK(w.size(3) == QK && scale.scalar_type() == at::kFloat && scale.is_contiguous(),
              "int8_gemm: blocks of 32 and a float32 scale [N] needed");
  TORCH_CHECK(block % QK == 0 && block > 0 && K % block == 0, "int8_gemm: block ", block,
              " must be a multiple of 32 dividing ", K);
  TORCH_CHECK(colsum.scalar_type() == at::kFloat && colsum.is_contiguous() && colsum.dim() == 3 &&
              colsum.size(0) == ceil_tiles(N) && colsum.size(1) == K / block && colsum.size(2) == TILE,
              "int8_gemm: colsum must be float32 [N/8, K / block, 8]");
#ifdef __AVX512VNNI__
  std::vector<uint8_t> xq(M * K);
  std::vector<float> d(M * (K / block));
  quantize_rows(x.data_ptr<float>(), M, K, block, true, xq.data(), d.data(), nullptr, nullptr);
  at::Tensor y = at::empty({M, N}, x.options());
  gemm_impl<false>(reinterpret_cast<const uint8_t*>(w.data_ptr<int8_t>()), xq.data(), M, K, N, block, d.data(),
                   nullptr, nullptr, scale.data_ptr<float>(), nullptr, colsum.data_ptr<float>(), y.data_ptr<float>());
  return y;
#else
  TORCH_CHECK(false, "int8_gemm: this build (", NEOX_STR(NEOX_NS), ") has no AVX512-VNNI code");
#endif
}

at::Tensor int4_gemm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                     int64_t group, int64_t N) {
  const int64_t K = w.size(1) * 2 * QK, M = x.size(0);
  check_activations(x, K, 2 * QK, "int4_gemm");
  check_tiles(w, N, at::kByte, "int4_gemm");
  TORCH_CHECK(w.size(3) == QK && group % QK == 0 && group > 0 && K % group == 0, "int4_gemm: group size ", group,
              " must be a multiple of 32 dividing ", K);
  const int64_t G = K / group;
  for (const at::Tensor* t : {&scale, &zero})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 3 &&
                t->size(0) == ceil_tiles(N) && t->size(1) == G && t->size(2) == TILE,
                "int4_gemm: scale and zero must be float32 [N/8, K / group, 8]");
#ifdef __AVX512VNNI__
  std::vector<uint8_t> xq(M * K);
  std::vector<float> d(M * G), sums(M * G), qs(M * G);
  quantize_rows(x.data_ptr<float>(), M, K, group, false, xq.data(), d.data(), sums.data(), qs.data());
  at::Tensor y = at::empty({M, N}, x.options());
  gemm_impl<true>(w.data_ptr<uint8_t>(), xq.data(), M, K, N, group, d.data(), sums.data(), qs.data(), scale.data_ptr<float>(),
                  zero.data_ptr<float>(), nullptr, y.data_ptr<float>());
  return y;
#else
  TORCH_CHECK(false, "int4_gemm: this build (", NEOX_STR(NEOX_NS), ") has no AVX512-VNNI code");
#endif
}

// ---- bf16: weight [N/8, K, 8] bfloat16 (k-major: the 8 rows' weights of column k side by side) -------------------
// out[m, n0..n0+7] = sum_k x[m, k] * w[k, 0..7]: one widened weight vector per column k serves up to 8 rows of x
// (broadcast x[m, k], one FMA each), with no horizontal sums; one row of x runs four columns at once instead.

inline __m256 widen_bf16(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(
      reinterpret_cast<const __m128i*>(p))), 16));
}

template <int MB>
inline void bf16_tile_rows(const uint16_t* Wt, const float* X, int64_t K, float* out, int64_t N, int64_t n0) {
  if constexpr (MB == 1) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t k = 0; k < K; k += 4) {
      _mm_prefetch(reinterpret_cast<const char*>(Wt + k * TILE) + PREFETCH, _MM_HINT_T0);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(X + k + j), widen_bf16(Wt + (k + j) * TILE), acc[j]);
    }
    store_tile(out, n0, N, _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  } else {
    __m256 acc[MB];
    #pragma GCC unroll 8  // keeps acc in registers: see "Accumulators" at the top
    for (size_t i = 0; i < sizeof(acc) / sizeof(acc[0]); ++i) acc[i] = _mm256_setzero_ps();
    const float* xr[MB];
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) xr[m] = X + m * K;
    for (int64_t k = 0; k < K; k += 4) {     // K is a multiple of 8
      _mm_prefetch(reinterpret_cast<const char*>(Wt + k * TILE) + PREFETCH, _MM_HINT_T0);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m256 w = widen_bf16(Wt + (k + j) * TILE);
#pragma GCC unroll 8
        for (int m = 0; m < MB; ++m) acc[m] = _mm256_fmadd_ps(_mm256_broadcast_ss(xr[m] + k + j), w, acc[m]);
      }
    }
#pragma GCC unroll 8
    for (int m = 0; m < MB; ++m) store_tile(out + m * N, n0, N, acc[m]);
  }
}

at::Tensor bf16_linear(const at::Tensor& x, const at::Tensor& w, int64_t N) {
  const int64_t K = w.size(1), M = x.size(0);
  check_activations(x, K, 8, "bf16_linear");
  TORCH_CHECK(w.dim() == 3 && w.scalar_type() == at::kBFloat16 && w.is_contiguous() && w.size(0) == ceil_tiles(N) &&
              w.size(2) == TILE, "bf16_linear: weight must be contiguous bfloat16 tiles [", ceil_tiles(N), ", K, 8]");
  at::Tensor y = at::empty({M, N}, x.options());
  float* out = y.data_ptr<float>();
  const float* X = x.data_ptr<float>();
  const uint16_t* W = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
  at::parallel_for(0, ceil_tiles(N), TILE_GRAIN, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const uint16_t* Wt = W + t * K * TILE;
      for (int64_t m0 = 0; m0 < M; m0 += 8) {
        const float* Xm = X + m0 * K;
        float* Om = out + m0 * N;
        switch (std::min<int64_t>(8, M - m0)) {
          case 1: bf16_tile_rows<1>(Wt, Xm, K, Om, N, t * TILE); break;
          case 2: bf16_tile_rows<2>(Wt, Xm, K, Om, N, t * TILE); break;
          case 3: bf16_tile_rows<3>(Wt, Xm, K, Om, N, t * TILE); break;
          case 4: bf16_tile_rows<4>(Wt, Xm, K, Om, N, t * TILE); break;
          case 5: bf16_tile_rows<5>(Wt, Xm, K, Om, N, t * TILE); break;
          case 6: bf16_tile_rows<6>(Wt, Xm, K, Om, N, t * TILE); break;
          case 7: bf16_tile_rows<7>(Wt, Xm, K, Om, N, t * TILE); break;
          default: bf16_tile_rows<8>(Wt, Xm, K, Om, N, t * TILE); break;
        }
      }
    }
  });
  return y;
}

// ---- bf16 x bf16: weight [N, K] bfloat16 (nn.Linear's layout), x [M, K] bfloat16, out [M, N] bfloat16 ---------
// For the few rows of a decode step on CPUs with AVX512-BF16: vdpbf16ps multiplies 32 bfloat16 pairs and adds
// them into 16 float32 sums. R weight rows are read side by side (R streams) against each of the M rows of x, so
// each weight byte is read once per call; float32 sums, rounded to bfloat16 once at the end (as oneDNN does).
#ifdef __AVX512BF16__
template <int M, int R>
inline void bf16_gemv_rows(const uint16_t* W, const uint16_t* X, int64_t K, int64_t N, int64_t n0,
                           at::BFloat16* out) {
  __m512 acc[M * R];
#pragma GCC unroll 16
  for (int i = 0; i < M * R; ++i) acc[i] = _mm512_setzero_ps();
  const uint16_t* w[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) w[r] = W + (n0 + r) * K;
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 mask = K - k >= 32 ? ~__mmask32(0) : (__mmask32(1) << (K - k)) - 1;
    __m512bh xv[M];
#pragma GCC unroll 4
    for (int m = 0; m < M; ++m) xv[m] = (__m512bh)_mm512_maskz_loadu_epi16(mask, X + m * K + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(w[r] + k) + PREFETCH, _MM_HINT_T0);
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mask, w[r] + k);
#pragma GCC unroll 4
      for (int m = 0; m < M; ++m) acc[m * R + r] = _mm512_dpbf16_ps(acc[m * R + r], wv, xv[m]);
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) out[m * N + n0 + r] = at::BFloat16(_mm512_reduce_add_ps(acc[m * R + r]));
}

template <int M>
void bf16_gemv_impl(const uint16_t* W, const uint16_t* X, int64_t K, int64_t N, at::BFloat16* out) {
  constexpr int R = M <= 2 ? 8 : 4;   // at most 16 accumulators
  const int64_t blocks = N / R;
  at::parallel_for(0, blocks + 1, 8, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (b < blocks) {
        bf16_gemv_rows<M, R>(W, X, K, N, b * R, out);
      } else {
        for (int64_t n = blocks * R; n < N; ++n) bf16_gemv_rows<M, 1>(W, X, K, N, n, out);
      }
    }
  });
}
#endif

at::Tensor bf16_gemv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.scalar_type() == at::kBFloat16 && w.scalar_type() == at::kBFloat16 &&
              x.is_contiguous() && w.is_contiguous() && x.size(1) == w.size(1) && x.device().is_cpu(),
              "bf16_gemv: contiguous bfloat16 x [M, K] and weight [N, K] needed");
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  TORCH_CHECK(M >= 1 && M <= 4, "bf16_gemv: 1 to 4 rows of x, not ", M);
#ifdef __AVX512BF16__
  at::Tensor y = at::empty({M, N}, x.options());
  const uint16_t* X = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const uint16_t* W = reinterpret_cast<const uint16_t*>(w.data_ptr<at::BFloat16>());
  at::BFloat16* out = y.data_ptr<at::BFloat16>();
  switch (M) {
    case 1: bf16_gemv_impl<1>(W, X, K, N, out); break;
    case 2: bf16_gemv_impl<2>(W, X, K, N, out); break;
    case 3: bf16_gemv_impl<3>(W, X, K, N, out); break;
    default: bf16_gemv_impl<4>(W, X, K, N, out); break;
  }
  return y;
#else
  TORCH_CHECK(false, "bf16_gemv: this build (", NEOX_STR(NEOX_NS), ") has no AVX512-BF16 code");
#endif
}

// The rows of one k-major bf16 tile as float32: 8 columns at a time, an 8 x 8 transpose of widened vectors.
inline void bf16_tile_rows_out(const uint16_t* Wt, int64_t K, float* O, int64_t N, int64_t n0) {
  for (int64_t k = 0; k < K; k += 8) {
    __m256 c[8];
    for (int j = 0; j < 8; ++j) c[j] = widen_bf16(Wt + (k + j) * TILE);   // c[j] lane r = w[r][k + j]
    const __m256 t0 = _mm256_unpacklo_ps(c[0], c[1]), t1 = _mm256_unpackhi_ps(c[0], c[1]);
    const __m256 t2 = _mm256_unpacklo_ps(c[2], c[3]), t3 = _mm256_unpackhi_ps(c[2], c[3]);
    const __m256 t4 = _mm256_unpacklo_ps(c[4], c[5]), t5 = _mm256_unpackhi_ps(c[4], c[5]);
    const __m256 t6 = _mm256_unpacklo_ps(c[6], c[7]), t7 = _mm256_unpackhi_ps(c[6], c[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    const __m256 rows[8] = {_mm256_permute2f128_ps(u0, u4, 0x20), _mm256_permute2f128_ps(u1, u5, 0x20),
                            _mm256_permute2f128_ps(u2, u6, 0x20), _mm256_permute2f128_ps(u3, u7, 0x20),
                            _mm256_permute2f128_ps(u0, u4, 0x31), _mm256_permute2f128_ps(u1, u5, 0x31),
                            _mm256_permute2f128_ps(u2, u6, 0x31), _mm256_permute2f128_ps(u3, u7, 0x31)};
    for (int64_t r = 0; r < TILE && n0 + r < N; ++r) _mm256_storeu_ps(O + (n0 + r) * K + k, rows[r]);
  }
}

// ---- the float32 weight [N, K] that tiles stand for -------------------------------------------------------------
// For products with many rows (prefill), where a float GEMM on the expanded weight beats dot products per row.
// bits 8: scale [N]; bits 4: scale, zero [N/8, G, 8]; bits 16: bfloat16 tiles, no scale.

// float32 -> bfloat16, round to nearest even, 16 values (finite inputs: weights).
inline void store_bf16x16(uint16_t* dst, const float* src) {
#ifdef __AVX512BF16__
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src)));
#else
  __m256i h[2];
  for (int i = 0; i < 2; ++i) {
    const __m256i b = _mm256_castps_si256(_mm256_loadu_ps(src + 8 * i));
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    h[i] = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF))), 16);
  }
  // packus interleaves 128-bit lanes: 0-3 8-11 4-7 12-15; the permute puts them back in order
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(h[0], h[1]), 0xD8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), packed);
#endif
}

at::Tensor dequantize(const at::Tensor& w, const c10::optional<at::Tensor>& scale,
                      const c10::optional<at::Tensor>& zero, int64_t group, int64_t bits, int64_t N, bool bf16) {
  TORCH_CHECK(bits == 8 || bits == 4 || bits == 16, "dequantize: bits must be 8, 4 or 16");
  TORCH_CHECK(!(bf16 && bits == 16), "dequantize: bfloat16 tiles expand to float32 only");
  TORCH_CHECK(w.dim() == (bits == 16 ? 3 : 4) && w.is_contiguous() && w.size(0) == ceil_tiles(N) &&
              w.size(2) == TILE, "dequantize: weight must be contiguous tiles");
  const int64_t per = bits == 16 ? 1 : (bits == 8 ? QK : 2 * QK);
  const int64_t K = w.size(1) * per, nblk = w.size(1);
  TORCH_CHECK(!bf16 || K % 16 == 0, "dequantize: bfloat16 output needs K a multiple of 16");
  at::Tensor out = at::empty({N, K}, w.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  float* O = bf16 ? nullptr : out.data_ptr<float>();
  uint16_t* OB = bf16 ? reinterpret_cast<uint16_t*>(out.data_ptr<at::BFloat16>()) : nullptr;
  if (bits != 16)
    TORCH_CHECK(scale.has_value() && scale->scalar_type() == at::kFloat && scale->is_contiguous(),
                "dequantize: a float32 scale is needed");
  if (bits == 4)
    TORCH_CHECK(zero.has_value() && zero->scalar_type() == at::kFloat && zero->is_contiguous() && K % group == 0,
                "dequantize: int4 needs a float32 zero and a group dividing K");
  const uint8_t* W = static_cast<const uint8_t*>(w.data_ptr());
  const float* S = bits == 16 ? nullptr : scale->data_ptr<float>();
  const float* Z = bits == 4 ? zero->data_ptr<float>() : nullptr;
  const int64_t G = bits == 4 ? K / group : 0;
  const int64_t blk_bytes = QK;   // bytes of one row's block in an int8 / int4 tile
  at::parallel_for(0, ceil_tiles(N), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> staging(bf16 ? K : 0);   // a bfloat16 row is built in float32, then rounded
    for (int64_t t = begin; t < end; ++t)
      for (int64_t r = 0; r < TILE && t * TILE + r < N; ++r) {
        const int64_t n = t * TILE + r;
        float* row = bf16 ? staging.data() : O + n * K;
        if (bits == 16) {   // k-major tiles: whole tiles at once below
          if (r == 0) bf16_tile_rows_out(reinterpret_cast<const uint16_t*>(W) + t * K * TILE, K, O, N, t * TILE);
          continue;
        }
        for (int64_t b = 0; b < nblk; ++b) {
          const uint8_t* src = W + ((t * nblk + b) * TILE + r) * blk_bytes;
          if (bits == 8) {
            const __m256 s = _mm256_set1_ps(S[n]);
            for (int j = 0; j < QK; j += 8) {
              const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + j));
              _mm256_storeu_ps(row + b * QK + j, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s));
            }
          } else {
            for (int half = 0; half < 2; ++half) {
              const int64_t k0 = b * 2 * QK + half * QK, g = k0 / group;
              const float s = S[(t * G + g) * TILE + r], z = Z[(t * G + g) * TILE + r];
              for (int j = 0; j < QK; ++j)
                row[k0 + j] = (static_cast<float>(half ? src[j] >> 4 : src[j] & 15) - 8.0f) * s + z;
            }
          }
        }
        if (bf16)
          for (int64_t k = 0; k < K; k += 16) store_bf16x16(OB + n * K + k, row + k);
      }
  });
  return out;
}

// e^x for x <= 0 (softmax after subtracting the max), 8 lanes: Cephes' range reduction x = n ln2 + r and a degree-5
// polynomial for e^r; relative error ~2e-7 (float32 rounding) over the range that matters, 0 below -87.
inline __m256 exp_neg(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// Decode attention over the paged KV cache: one new query per sequence attends over exactly its own seq_len cached
// positions, read where they lie in the blocks (no gathered copy of the context, nothing past seq_len read: padding
// and stale slots of other requests are never touched). q [S, nh, hd]; caches [blocks, block_size, nh, hd];
// block_tables [S, max_blocks] int64; seq_lens [S] int64. float32 throughout; hd a multiple of 8.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return widen_bf16(p); }

template <typename C>   // the caches' element: float, or uint16_t holding bfloat16 bits; k_cache gives the shape
void paged_decode_attention_impl(const at::Tensor& q, const C* K, const C* V, const at::Tensor& k_cache,
                                 const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale,
                                 at::Tensor& out);

at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kFloat && k_cache.scalar_type() == v_cache.scalar_type() &&
              (k_cache.scalar_type() == at::kFloat || k_cache.scalar_type() == at::kBFloat16),
              "paged_decode_attention: float32 q and float32 or bfloat16 caches needed");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && k_cache.sizes() == v_cache.sizes() &&
              block_tables.is_contiguous() && seq_lens.is_contiguous() && block_tables.scalar_type() == at::kLong &&
              seq_lens.scalar_type() == at::kLong, "paged_decode_attention: contiguous caches, int64 tables");
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  if (k_cache.scalar_type() == at::kFloat)
    paged_decode_attention_impl<float>(q, k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), k_cache,
                                       block_tables, seq_lens, scale, out);
  else
    paged_decode_attention_impl<uint16_t>(q, reinterpret_cast<const uint16_t*>(k_cache.data_ptr<at::BFloat16>()),
                                          reinterpret_cast<const uint16_t*>(v_cache.data_ptr<at::BFloat16>()),
                                          k_cache, block_tables, seq_lens, scale, out);
  return out;
}

template <typename C>
void paged_decode_attention_impl(const at::Tensor& q, const C* K, const C* V, const at::Tensor& k_cache,
                                 const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale,
                                 at::Tensor& out) {
  const int64_t S = q.size(0), nh = q.size(1), hd = q.size(2);
  const int64_t bs = k_cache.size(1), width = block_tables.size(1);
  TORCH_CHECK(k_cache.size(2) == nh && k_cache.size(3) == hd && hd % 8 == 0,
              "paged_decode_attention: cache shape does not match q (head dim must be a multiple of 8)");
  const at::Tensor qc = q.contiguous();
  const float* Q = qc.data_ptr<float>();
  const int64_t* T = block_tables.data_ptr<int64_t>();
  const int64_t* L = seq_lens.data_ptr<int64_t>();
  float* O = out.data_ptr<float>();
  const int64_t pos_stride = nh * hd, block_stride = bs * nh * hd;
  const float sc = static_cast<float>(scale);
  // Work items: (sequence, group of G adjacent heads). A group's K (then V) of one position are G * hd contiguous
  // floats, so positions are read in runs instead of one head's 256 strided bytes at a time; groups are as wide
  // as they can be while leaving at least two items per thread.
  int64_t G = 1;
  for (int64_t g : {4, 2})
    if (nh % g == 0 && S * (nh / g) >= 2 * at::get_num_threads()) { G = g; break; }
  const int64_t groups = nh / G;
  at::parallel_for(0, S * groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores, acc;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t s = item / groups, h0 = (item % groups) * G, n = L[s];
      TORCH_CHECK(n >= 1 && n <= width * bs, "paged_decode_attention: seq_len out of the block table's range");
      const int64_t npad = (n + 7) / 8 * 8;
      scores.resize(G * npad);
      auto slot = [&](const C* base, int64_t p) {    // position p of head h0 in a cache
        return base + T[s * width + p / bs] * block_stride + (p % bs) * pos_stride + h0 * hd;
      };
      // scores, 8 positions at a time: 8 independent dot products, summed together by reduce8
      for (int64_t p0 = 0; p0 < n; p0 += 8) {
        const C* kp[8];
        for (int64_t i = 0; i < 8; ++i) kp[i] = slot(K, std::min(p0 + i, n - 1));   // past n: padding, unused
        for (int64_t g = 0; g < G; ++g) {
          const float* qv = Q + (s * nh + h0 + g) * hd;
          __m256 d[8];
#pragma GCC unroll 8
          for (int64_t i = 0; i < 8; ++i) {
            d[i] = _mm256_setzero_ps();
            for (int64_t j = 0; j < hd; j += 8)
              d[i] = _mm256_fmadd_ps(_mm256_loadu_ps(qv + j), load8(kp[i] + g * hd + j), d[i]);
          }
          _mm256_storeu_ps(scores.data() + g * npad + p0, _mm256_mul_ps(reduce8(d), _mm256_set1_ps(sc)));
        }
      }
      // softmax of each head's scores (in place), with 1 / sum kept for the end
      float inv[4];
      for (int64_t g = 0; g < G; ++g) {
        float* sg = scores.data() + g * npad;
        float mx = -INFINITY;
        for (int64_t p = 0; p < n; ++p) mx = std::max(mx, sg[p]);
        const __m256 vmx = _mm256_set1_ps(mx);
        __m256 vsum = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 8 <= n; p += 8) {
          const __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(sg + p), vmx));
          _mm256_storeu_ps(sg + p, e);
          vsum = _mm256_add_ps(vsum, e);
        }
        float sum = hsum(vsum);
        for (; p < n; ++p) {
          alignas(32) float tmp[8];
          _mm256_store_ps(tmp, exp_neg(_mm256_set1_ps(sg[p] - mx)));
          sg[p] = tmp[0];
          sum += tmp[0];
        }
        inv[g] = 1.0f / sum;
      }
      // weighted sum of V, position by position (each position's G heads are one contiguous run)
      acc.assign(G * hd, 0.0f);
      for (int64_t p = 0; p < n; ++p) {
        const C* vp = slot(V, p);
        for (int64_t g = 0; g < G; ++g) {
          const __m256 w = _mm256_set1_ps(scores[g * npad + p]);
          float* a = acc.data() + g * hd;
          for (int64_t j = 0; j < hd; j += 8)
            _mm256_storeu_ps(a + j, _mm256_fmadd_ps(w, load8(vp + g * hd + j), _mm256_loadu_ps(a + j)));
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        const __m256 vinv = _mm256_set1_ps(inv[g]);
        float* ov = O + (s * nh + h0 + g) * hd;
        for (int64_t j = 0; j < hd; j += 8)
          _mm256_storeu_ps(ov + j, _mm256_mul_ps(_mm256_loadu_ps(acc.data() + g * hd + j), vinv));
      }
    }
  });
}

}  // namespace

NEOX_LIBRARY(NEOX_NS, m) {
  m.def("features", &features);   // no tensor arguments: a catch-all kernel
  m.def("bf16_gemv(Tensor x, Tensor weight) -> Tensor");
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("int4_linear(Tensor x, Tensor weight, Tensor scale, Tensor zero, int group, int n) -> Tensor");
  m.def("int8_gemm(Tensor x, Tensor weight, Tensor scale, Tensor colsum, int block) -> Tensor");
  m.def("int4_gemm(Tensor x, Tensor weight, Tensor scale, Tensor zero, int group, int n) -> Tensor");
  m.def("bf16_linear(Tensor x, Tensor weight, int n) -> Tensor");
  m.def("dequantize(Tensor weight, Tensor? scale, Tensor? zero, int group, int bits, int n, bool bf16=False) -> "
        "Tensor");
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor seq_lens, "
        "float scale) -> Tensor");
}

NEOX_LIBRARY_IMPL(NEOX_NS, CPU, m) {
  m.impl("bf16_gemv", &bf16_gemv);
  m.impl("int8_linear", &int8_linear);
  m.impl("int4_linear", &int4_linear);
  m.impl("int8_gemm", &int8_gemm);
  m.impl("int4_gemm", &int4_gemm);
  m.impl("bf16_linear", &bf16_linear);
  m.impl("dequantize", &dequantize);
  m.impl("paged_decode_attention", &paged_decode_attention);
}
