// Rectangles of a channels-last sample (positions x channels), gathered into a buffer in
// logical order (channel after channel) and scattered back.
//
// The CPU kernels (kernel_impl.h) walk runs of logically consecutive elements, and a
// channels-last result equals the channels-first one bit for bit only if each run is handed to
// the kernel in logical order (the KL's summation order included).  ops_cpu.cpp cuts a sample
// into runs that lie inside one channel (or cover whole channels), and hands out rectangles of
// positions x channels made of whole runs: in memory (infodrop/layout.h: offset s * C + c) a
// rectangle is a block of an S x C matrix, which is transposed into the buffer in SIMD tiles:
// 4 x 4 for 4-byte types, 8 x 8 for 2-byte ones (SSE2 unpacks: half and bfloat16 move as many
// elements per instruction as float does), 2 x 2 for double.  The buffer stays in cache, so a
// rectangle costs one pass over memory, as a channels-first run does.
// No PyTorch header: plain pointers.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

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

// Asks for the cache lines of n elements from p: the strided rows of a transpose are a
// kilobyte and more apart, which the hardware prefetchers do not follow, so without this every
// row is a demand miss.
template <class T>
void prefetch_row(const T* p, int64_t n, bool write) {
  const char* first = reinterpret_cast<const char*>(p);
  for (const char* line = first; line < first + n * int64_t(sizeof(T)); line += 64)
    write ? __builtin_prefetch(line, 1) : __builtin_prefetch(line, 0);
}

// out[j * out_stride + i] = in[i * in_stride + j] for i < rows, j < cols, in SIMD tiles (the
// ragged edges element by element), where one side's rows are long and dense (the buffer) and
// the other's short and far apart (the sample's channels at a position: C elements apart,
// often a power of two, so those rows share a few cache sets).  The tiles are walked so that
// each short row is finished while it is in L1, and prefetched kAhead tiles ahead: reading a
// sample (gather) takes K input rows at a time across all columns; writing one (scatter) K
// output rows at a time across all rows.  Writing the output rows across in bands instead left
// every strided line to be revisited after 30 others in its sets, and ran 5x slower.
template <class T>
void transpose(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t rows,
               int64_t cols, bool strided_out) {
  using Simd = Tile<sizeof(T)>;
  constexpr int64_t K = Simd::K, kAhead = 4 * Simd::K;
  // The short rows, (along, across): K of them per step along `along`, each `across` long.
  const int64_t along = strided_out ? cols : rows, across = strided_out ? rows : cols;
  const auto at = [&](int64_t a, int64_t c) {  // (input, output) offsets of element (a, c)
    const int64_t i = strided_out ? c : a, j = strided_out ? a : c;
    return std::pair<int64_t, int64_t>{i * in_stride + j, j * out_stride + i};
  };
  for (int64_t a = 0; a < std::min(along, kAhead); ++a)
    strided_out ? prefetch_row(out + a * out_stride, across, true)
                : prefetch_row(in + a * in_stride, across, false);
  int64_t a = 0;
  if constexpr (K > 1) {
    const int64_t c_tiles = across / K * K;
    for (; a + K <= along; a += K) {
      for (int64_t p = a + kAhead; p < std::min(along, a + kAhead + K); ++p)
        strided_out ? prefetch_row(out + p * out_stride, across, true)
                    : prefetch_row(in + p * in_stride, across, false);
      for (int64_t c = 0; c < c_tiles; c += K) {
        const auto [from, to] = at(a, c);
        Simd::transpose(in + from, in_stride, out + to, out_stride);
      }
      for (int64_t c = c_tiles; c < across; ++c)
        for (int64_t k = a; k < a + K; ++k) {
          const auto [from, to] = at(k, c);
          out[to] = in[from];
        }
    }
  }
  for (; a < along; ++a)
    for (int64_t c = 0; c < across; ++c) {
      const auto [from, to] = at(a, c);
      out[to] = in[from];
    }
}

// buffer[(c - c0) * pitch + s - s0] = the element at position s of channel c, for the
// rectangle [s0, s1) x [c0, c1) of a channels-last sample of C channels.
template <class T>
void gather(const T* sample, int64_t C, int64_t s0, int64_t s1, int64_t c0, int64_t c1,
            T* buffer, int64_t pitch) {
  transpose(sample + s0 * C + c0, C, buffer, pitch, s1 - s0, c1 - c0, false);
}

// The inverse: the element at position s of channel c = buffer[(c - c0) * pitch + s - s0].
template <class T>
void scatter(const T* buffer, int64_t pitch, int64_t C, int64_t s0, int64_t s1, int64_t c0,
             int64_t c1, T* sample) {
  transpose(buffer, pitch, sample + s0 * C + c0, C, c1 - c0, s1 - s0, true);
}

}  // namespace cpu
}  // namespace infodrop
