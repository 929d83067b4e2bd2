// CPU kernels for x86 with AVX2 (neoxserve/model/kernels/__init__.py builds this file): weight-only quantized
// linears, and decode attention straight out of the paged KV cache.
//
// Why: on AVX2 CPUs PyTorch's own weight-only kernels (_weight_int8pack_mm, _weight_int4pack_mm_for_cpu) run
// several times slower than a plain float32 product of the same shape (docs/engine.md, "Quantized weights"), so
// quantized weights were slower than float ones. These kernels read the weights once per call and multiply them
// with integer dot products, as llama.cpp does on the same CPUs:
//
//   1. the activations x [M, K] (float32) are quantized per block of 32 along K: xq = round(x / d), d = max|x| / 127;
//   2. per block, an 8-bit dot product of the weight row with xq (vpmaddubsw + vpmaddwd: 32 products in two
//      instructions), scaled by d and the weight's scale, accumulated in float32.
//
// Weights are in quant_format.py's portable layout: int8 [N, K] with one float32 scale per row; int4 as nibbles
// [N, K / 2] (column 2j in the low nibble of byte j) with float32 scale and zero per group of G columns,
// w = (q - 8) * scale + zero. K must be a multiple of 32 and G a multiple of 32.
//
// Work is split over output rows with at::parallel_for (PyTorch's own thread pool, so there is no second OpenMP
// runtime competing for the cores).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t QK = 32;        // activation block
constexpr int64_t ROWS = 4;       // output rows computed together (each weight block loaded once for them)

// x [M, K] -> xq int8 [M, K], d [M, K/32] (scale of each block), bsum [M, K/32] (sum of the block's xq).
// For int4 the 32 values of a block are stored as [even columns | odd columns], the order in which the nibbles of
// 16 weight bytes unpack (low nibbles, then high nibbles).
void quantize_activations(const float* x, int64_t M, int64_t K, bool interleave, int8_t* xq, float* d,
                          int32_t* bsum) {
  const int64_t nb = K / QK;
  at::parallel_for(0, M * nb, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* src = x + (i / nb) * K + (i % nb) * QK;
      __m256 v[4];
      __m256 amax = _mm256_setzero_ps();
      const __m256 sign_bit = _mm256_set1_ps(-0.0f);
      for (int j = 0; j < 4; ++j) {
        v[j] = _mm256_loadu_ps(src + 8 * j);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[j]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float maxabs = _mm_cvtss_f32(m4);
      const float scale = maxabs / 127.0f;
      d[i] = scale;
      const __m256 inv = _mm256_set1_ps(maxabs > 0.0f ? 127.0f / maxabs : 0.0f);
      int8_t q[QK];
      int32_t sum = 0;
      for (int j = 0; j < 4; ++j) {
        __m256i r = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[j], inv), _MM_ROUND_NEAREST));
        alignas(32) int32_t tmp[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), r);
        for (int t = 0; t < 8; ++t) {
          q[8 * j + t] = static_cast<int8_t>(tmp[t]);
          sum += tmp[t];
        }
      }
      int8_t* dst = xq + i * QK;
      if (interleave) {
        for (int t = 0; t < QK / 2; ++t) {
          dst[t] = q[2 * t];
          dst[QK / 2 + t] = q[2 * t + 1];
        }
      } else {
        for (int t = 0; t < QK; ++t) dst[t] = q[t];
      }
      bsum[i] = sum;
    }
  });
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 signed 8-bit products summed in pairs of pairs: 8 int32 lanes (the sign trick: |x| is the unsigned operand).
inline __m256i dot_i8(__m256i w, __m256i x) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sw = _mm256_sign_epi8(w, x);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sw), _mm256_set1_epi16(1));
}

// 32 unsigned 4-bit levels (0..15) times 32 signed 8-bit activations.
inline __m256i dot_u4(__m256i q, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1));
}

inline __m256i unpack_nibbles(const uint8_t* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  return _mm256_set_m128i(hi, lo);
}

void check_activations(const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.device().is_cpu(),
              "wq_linear: x must be a contiguous float32 CPU matrix");
  TORCH_CHECK(x.size(1) == K && K % QK == 0, "wq_linear: x has ", x.size(1), " columns, the weight ", K,
              " (a multiple of 32 is needed)");
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale) {
  const int64_t M = x.size(0), N = w.size(0), K = w.size(1);
  check_activations(x, K);
  TORCH_CHECK(w.scalar_type() == at::kChar && w.is_contiguous(), "int8_linear: weight must be contiguous int8");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == N && scale.is_contiguous(),
              "int8_linear: scale must be float32 [N]");
  const int64_t nb = K / QK;
  std::vector<int8_t> xq(M * K);
  std::vector<float> d(M * nb);
  std::vector<int32_t> bsum(M * nb);
  quantize_activations(x.data_ptr<float>(), M, K, false, xq.data(), d.data(), bsum.data());
  at::Tensor y = at::empty({M, N}, x.options());
  float* out = y.data_ptr<float>();
  const int8_t* W = w.data_ptr<int8_t>();
  const float* S = scale.data_ptr<float>();
  at::parallel_for(0, (N + ROWS - 1) / ROWS, 1, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t n0 = rb * ROWS, rows = std::min<int64_t>(ROWS, N - n0);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xm = xq.data() + m * K;
        const float* dm = d.data() + m * nb;
        __m256 acc[ROWS] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t b = 0; b < nb; ++b) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + b * QK));
          const __m256 db = _mm256_set1_ps(dm[b]);
          for (int64_t r = 0; r < rows; ++r) {
            const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(W + (n0 + r) * K + b * QK));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8(wv, xv)), db, acc[r]);
          }
        }
        for (int64_t r = 0; r < rows; ++r) out[m * N + n0 + r] = hsum(acc[r]) * S[n0 + r];
      }
    }
  });
  return y;
}

at::Tensor int4_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& scale, const at::Tensor& zero,
                       int64_t group) {
  const int64_t M = x.size(0), N = w.size(0), K = w.size(1) * 2;
  check_activations(x, K);
  TORCH_CHECK(group % QK == 0 && K % group == 0, "int4_linear: group size ", group, " must be a multiple of 32 "
              "dividing ", K);
  const int64_t G = K / group, nb = K / QK, bpg = group / QK;
  TORCH_CHECK(w.scalar_type() == at::kByte && w.is_contiguous(), "int4_linear: weight must be contiguous uint8");
  for (const at::Tensor* t : {&scale, &zero})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == N * G,
                "int4_linear: scale and zero must be float32 [N, K / group]");
  std::vector<int8_t> xq(M * K);
  std::vector<float> d(M * nb);
  std::vector<int32_t> bsum(M * nb);
  quantize_activations(x.data_ptr<float>(), M, K, true, xq.data(), d.data(), bsum.data());
  // Per row of x and group: the terms that do not depend on the weight's levels. With w = (q - 8) s + z,
  // sum_k w_k x_k = s * sum_b d_b (q . xq_b - 8 bsum_b) + z * sum_k x_k.
  std::vector<float> offset(M * G), xsum(M * G);
  const float* X = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      float o = 0.0f, s = 0.0f;
      for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) o += d[m * nb + b] * static_cast<float>(bsum[m * nb + b]);
      for (int64_t k = g * group; k < (g + 1) * group; ++k) s += X[m * K + k];
      offset[m * G + g] = -8.0f * o;
      xsum[m * G + g] = s;
    }
  at::Tensor y = at::empty({M, N}, x.options());
  float* out = y.data_ptr<float>();
  const uint8_t* W = w.data_ptr<uint8_t>();
  const float* S = scale.data_ptr<float>();
  const float* Z = zero.data_ptr<float>();
  at::parallel_for(0, (N + ROWS - 1) / ROWS, 1, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t n0 = rb * ROWS, rows = std::min<int64_t>(ROWS, N - n0);
      for (int64_t m = 0; m < M; ++m) {
        const int8_t* xm = xq.data() + m * K;
        const float* dm = d.data() + m * nb;
        __m256 acc[ROWS] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float tail[ROWS] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int64_t g = 0; g < G; ++g) {
          for (int64_t r = 0; r < rows; ++r) {
            const float s = S[(n0 + r) * G + g];
            tail[r] += s * offset[m * G + g] + Z[(n0 + r) * G + g] * xsum[m * G + g];
          }
          for (int64_t b = g * bpg; b < (g + 1) * bpg; ++b) {
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xm + b * QK));
            for (int64_t r = 0; r < rows; ++r) {
              const __m256i q = unpack_nibbles(W + (n0 + r) * (K / 2) + b * (QK / 2));
              const __m256 f = _mm256_set1_ps(dm[b] * S[(n0 + r) * G + g]);
              acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u4(q, xv)), f, acc[r]);
            }
          }
        }
        for (int64_t r = 0; r < rows; ++r) out[m * N + n0 + r] = hsum(acc[r]) + tail[r];
      }
    }
  });
  return y;
}

// The float32 weight [N, K] that the quantized one stands for (for products with many rows, where a float GEMM
// on the expanded weight is faster than dot products per row).
at::Tensor dequantize(const at::Tensor& w, const at::Tensor& scale, const c10::optional<at::Tensor>& zero,
                      int64_t group, int64_t bits) {
  TORCH_CHECK(bits == 8 || bits == 4, "dequantize: bits must be 8 or 4");
  const int64_t N = w.size(0), K = bits == 8 ? w.size(1) : w.size(1) * 2;
  TORCH_CHECK(w.is_contiguous() && scale.is_contiguous() && scale.scalar_type() == at::kFloat,
              "dequantize: contiguous weight and float32 scale needed");
  at::Tensor out = at::empty({N, K}, scale.options());
  float* O = out.data_ptr<float>();
  const float* S = scale.data_ptr<float>();
  if (bits == 8) {
    const int8_t* W = w.data_ptr<int8_t>();
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const __m256 s = _mm256_set1_ps(S[n]);
        for (int64_t k = 0; k < K; k += 8) {
          const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(W + n * K + k));
          _mm256_storeu_ps(O + n * K + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), s));
        }
      }
    });
  } else {
    TORCH_CHECK(zero.has_value() && zero->is_contiguous() && zero->scalar_type() == at::kFloat,
                "dequantize: int4 needs a float32 zero");
    const uint8_t* W = w.data_ptr<uint8_t>();
    const float* Z = zero->data_ptr<float>();
    const int64_t G = K / group;
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n)
        for (int64_t k = 0; k < K; k += 2) {
          const uint8_t byte = W[n * (K / 2) + k / 2];
          const float s = S[n * G + k / group], z = Z[n * G + k / group];
          O[n * K + k] = (static_cast<float>(byte & 15) - 8.0f) * s + z;
          O[n * K + k + 1] = (static_cast<float>(byte >> 4) - 8.0f) * s + z;
        }
    });
  }
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
at::Tensor paged_decode_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                  const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kFloat && k_cache.scalar_type() == at::kFloat &&
              v_cache.scalar_type() == at::kFloat, "paged_decode_attention: float32 q and caches needed");
  TORCH_CHECK(k_cache.is_contiguous() && v_cache.is_contiguous() && block_tables.is_contiguous() &&
              seq_lens.is_contiguous() && block_tables.scalar_type() == at::kLong &&
              seq_lens.scalar_type() == at::kLong, "paged_decode_attention: contiguous caches, int64 tables");
  const int64_t S = q.size(0), nh = q.size(1), hd = q.size(2);
  const int64_t bs = k_cache.size(1), width = block_tables.size(1);
  TORCH_CHECK(k_cache.size(2) == nh && k_cache.size(3) == hd && hd % 8 == 0,
              "paged_decode_attention: cache shape does not match q (head dim must be a multiple of 8)");
  const at::Tensor qc = q.contiguous();
  at::Tensor out = at::empty({S, nh, hd}, q.options());
  const float* Q = qc.data_ptr<float>();
  const float* K = k_cache.data_ptr<float>();
  const float* V = v_cache.data_ptr<float>();
  const int64_t* T = block_tables.data_ptr<int64_t>();
  const int64_t* L = seq_lens.data_ptr<int64_t>();
  float* O = out.data_ptr<float>();
  const int64_t pos_stride = nh * hd, block_stride = bs * nh * hd;
  const float sc = static_cast<float>(scale);
  at::parallel_for(0, S * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    std::vector<__m256> acc(hd / 8);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = i / nh, h = i % nh, n = L[s];
      TORCH_CHECK(n >= 1 && n <= width * bs, "paged_decode_attention: seq_len out of the block table's range");
      const float* qv = Q + (s * nh + h) * hd;
      scores.resize(n);
      float mx = -INFINITY;
      for (int64_t p = 0; p < n; ++p) {
        const float* kp = K + T[s * width + p / bs] * block_stride + (p % bs) * pos_stride + h * hd;
        __m256 d = _mm256_setzero_ps();
        for (int64_t j = 0; j < hd; j += 8) d = _mm256_fmadd_ps(_mm256_loadu_ps(qv + j), _mm256_loadu_ps(kp + j), d);
        scores[p] = hsum(d) * sc;
        mx = std::max(mx, scores[p]);
      }
      const __m256 vmx = _mm256_set1_ps(mx);
      __m256 vsum = _mm256_setzero_ps();
      int64_t p = 0;
      for (; p + 8 <= n; p += 8) {
        const __m256 e = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(scores.data() + p), vmx));
        _mm256_storeu_ps(scores.data() + p, e);
        vsum = _mm256_add_ps(vsum, e);
      }
      float sum = hsum(vsum);
      for (; p < n; ++p) {
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, exp_neg(_mm256_set1_ps(scores[p] - mx)));
        scores[p] = tmp[0];
        sum += tmp[0];
      }
      for (auto& a : acc) a = _mm256_setzero_ps();
      for (int64_t p2 = 0; p2 < n; ++p2) {
        const float* vp = V + T[s * width + p2 / bs] * block_stride + (p2 % bs) * pos_stride + h * hd;
        const __m256 w = _mm256_set1_ps(scores[p2]);
        for (int64_t j = 0; j < hd / 8; ++j) acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(vp + 8 * j), acc[j]);
      }
      const __m256 inv = _mm256_set1_ps(1.0f / sum);
      float* ov = O + (s * nh + h) * hd;
      for (int64_t j = 0; j < hd / 8; ++j) _mm256_storeu_ps(ov + 8 * j, _mm256_mul_ps(acc[j], inv));
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(neoxserve, m) {
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("int4_linear(Tensor x, Tensor weight, Tensor scale, Tensor zero, int group) -> Tensor");
  m.def("dequantize(Tensor weight, Tensor scale, Tensor? zero, int group, int bits) -> Tensor");
  m.def("paged_decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_tables, Tensor seq_lens, "
        "float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(neoxserve, CPU, m) {
  m.impl("int8_linear", &int8_linear);
  m.impl("int4_linear", &int4_linear);
  m.impl("dequantize", &dequantize);
  m.impl("paged_decode_attention", &paged_decode_attention);
}
