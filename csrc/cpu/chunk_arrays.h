// Runs of logically consecutive elements of a channels-last sample, gathered into a contiguous
// buffer and scattered back.
//
// The CPU kernels (kernel_impl.h) walk runs of logically consecutive elements, and the KL is
// summed per run of kChunk elements in that order, so a channels-last result equals the
// channels-first one bit for bit only if each run is handed to the kernel in logical order.
// Logically a run is channel after channel, each a range of positions; in memory
// (infodrop/layout.h: offset s * C + c) those are columns of an S x C matrix.  A run is cut into
// rectangles of positions x channels (a row range in which every row holds the same channels)
// and each rectangle is transposed in SIMD tiles: 4 x 4 for 4-byte types, 8 x 8 for 2-byte ones
// (SSE2 unpacks: half and bfloat16 move as many elements per instruction as float does), 2 x 2
// for double.  The buffer stays in cache, so the run costs one pass over memory, as a
// channels-first run does; what the transposes add is counted in docs/performance.md.
// No PyTorch header: plain pointers and SampleLayout.
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "infodrop/layout.h"

namespace infodrop {
namespace cpu {

// A square tile of K x K elements of sizeof(T) bytes, transposed in registers:
// out[j * out_stride + i] = in[i * in_stride + j] for i, j < K.
template <int Bytes>
struct Tile {
  static constexpr int64_t K = 1;  // no SIMD tile: element by element
};

#if defined(__SSE2__)
template <>
struct Tile<4> {
  static constexpr int64_t K = 4;
  static void transpose(const void* in, int64_t in_stride, void* out, int64_t out_stride) {
    const float* a = static_cast<const float*>(in);
    float* b = static_cast<float*>(out);
    __m128 r0 = _mm_loadu_ps(a), r1 = _mm_loadu_ps(a + in_stride),
           r2 = _mm_loadu_ps(a + 2 * in_stride), r3 = _mm_loadu_ps(a + 3 * in_stride);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_storeu_ps(b, r0);
    _mm_storeu_ps(b + out_stride, r1);
    _mm_storeu_ps(b + 2 * out_stride, r2);
    _mm_storeu_ps(b + 3 * out_stride, r3);
  }
};

template <>
struct Tile<2> {
  static constexpr int64_t K = 8;
  // Three rounds of unpacks interleave 16-, 32- and 64-bit pieces of row pairs.
  static void transpose(const void* in, int64_t in_stride, void* out, int64_t out_stride) {
    const uint16_t* a = static_cast<const uint16_t*>(in);
    uint16_t* b = static_cast<uint16_t*>(out);
    __m128i r[8];
    for (int i = 0; i < 8; ++i)
      r[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i * in_stride));
    // pairs of rows: lo[p] holds columns 0-3 of rows 2p and 2p + 1, hi[p] columns 4-7
    __m128i lo[4], hi[4];
    for (int p = 0; p < 4; ++p) {
      lo[p] = _mm_unpacklo_epi16(r[2 * p], r[2 * p + 1]);
      hi[p] = _mm_unpackhi_epi16(r[2 * p], r[2 * p + 1]);
    }
    // quads of rows: q[h][k] holds columns 2k and 2k + 1 of rows 4h to 4h + 3
    __m128i q[2][4];
    for (int h = 0; h < 2; ++h) {
      q[h][0] = _mm_unpacklo_epi32(lo[2 * h], lo[2 * h + 1]);
      q[h][1] = _mm_unpackhi_epi32(lo[2 * h], lo[2 * h + 1]);
      q[h][2] = _mm_unpacklo_epi32(hi[2 * h], hi[2 * h + 1]);
      q[h][3] = _mm_unpackhi_epi32(hi[2 * h], hi[2 * h + 1]);
    }
    for (int k = 0; k < 4; ++k) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(b + 2 * k * out_stride),
                       _mm_unpacklo_epi64(q[0][k], q[1][k]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(b + (2 * k + 1) * out_stride),
                       _mm_unpackhi_epi64(q[0][k], q[1][k]));
    }
  }
};

template <>
struct Tile<8> {
  static constexpr int64_t K = 2;
  static void transpose(const void* in, int64_t in_stride, void* out, int64_t out_stride) {
    const double* a = static_cast<const double*>(in);
    double* b = static_cast<double*>(out);
    const __m128d r0 = _mm_loadu_pd(a), r1 = _mm_loadu_pd(a + in_stride);
    _mm_storeu_pd(b, _mm_unpacklo_pd(r0, r1));
    _mm_storeu_pd(b + out_stride, _mm_unpackhi_pd(r0, r1));
  }
};
#endif

// out[j * out_stride + i] = in[i * in_stride + j] for i < rows, j < cols: SIMD tiles, the
// ragged edges element by element.  Columns are taken kBand at a time so that the kBand
// output rows being written stay in L1 while the input rows stream past.
template <class T>
void transpose(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t rows,
               int64_t cols) {
  using Simd = Tile<sizeof(T)>;
  constexpr int64_t K = Simd::K, kBand = 32;
  for (int64_t j0 = 0; j0 < cols; j0 += kBand) {
    const int64_t j1 = std::min(cols, j0 + kBand);
    const int64_t j_tiles = j0 + (j1 - j0) / K * K;
    int64_t i = 0;
    if constexpr (K > 1) {
      for (; i + K <= rows; i += K) {
        for (int64_t j = j0; j < j_tiles; j += K)
          Simd::transpose(in + i * in_stride + j, in_stride, out + j * out_stride + i, out_stride);
        for (int64_t j = j_tiles; j < j1; ++j)
          for (int64_t k = i; k < i + K; ++k) out[j * out_stride + k] = in[k * in_stride + j];
      }
    }
    for (; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) out[j * out_stride + i] = in[i * in_stride + j];
  }
}

// Calls f(s0, s1, c0, c1) for rectangles covering the logical elements [j0, j0 + n) of a
// channels-last sample: rows (positions) [s0, s1), channels [c0, c1).  Only the first and the
// last channel of the run are partial (from position p0, up to position p1), so cutting the rows
// at p0 and p1 leaves at most three row ranges, each with one channel range.
template <class F>
void for_each_rectangle(const SampleLayout& layout, int64_t j0, int64_t n, const F& f) {
  const int64_t S = layout.positions;
  const int64_t first = j0 / S, last = (j0 + n - 1) / S;
  const int64_t p0 = j0 - first * S, p1 = j0 + n - last * S;
  if (first == last) return f(p0, p1, first, first + 1);
  const int64_t cuts[4] = {0, std::min(p0, p1), std::max(p0, p1), S};
  for (int k = 0; k < 3; ++k) {
    const int64_t s0 = cuts[k], s1 = cuts[k + 1];
    if (s0 == s1) continue;
    const int64_t c0 = s0 >= p0 ? first : first + 1, c1 = s0 < p1 ? last + 1 : last;
    if (c0 < c1) f(s0, s1, c0, c1);
  }
}

// buffer[j - j0] = the sample's logical element j, for j in [j0, j0 + n).
template <class T>
void gather(const T* sample, const SampleLayout& layout, int64_t j0, int64_t n, T* buffer) {
  const int64_t C = layout.channels, S = layout.positions;
  for_each_rectangle(layout, j0, n, [&](int64_t s0, int64_t s1, int64_t c0, int64_t c1) {
    transpose(sample + s0 * C + c0, C, buffer + c0 * S + s0 - j0, S, s1 - s0, c1 - c0);
  });
}

// The inverse: the sample's logical element j = buffer[j - j0].
template <class T>
void scatter(const T* buffer, const SampleLayout& layout, int64_t j0, int64_t n, T* sample) {
  const int64_t C = layout.channels, S = layout.positions;
  for_each_rectangle(layout, j0, n, [&](int64_t s0, int64_t s1, int64_t c0, int64_t c1) {
    transpose(buffer + c0 * S + s0 - j0, S, sample + s0 * C + c0, C, c1 - c0, s1 - s0);
  });
}

}  // namespace cpu
}  // namespace infodrop
