// Storage types of the CPU kernels and their scalar conversions to and from float.
//
// The ISA translation units include no PyTorch header (their inline functions would be built
// with AVX-512 and could be picked by the linker for every caller), so half and bfloat16 cross
// the boundary as these bit-compatible structs (the glue static_asserts their layout).
#pragma once

#include <cstdint>
#include <cstring>

namespace infodrop {

struct Half16 {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t float_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

inline float to_float(float v) { return v; }
inline double to_float(double v) { return v; }
inline float to_float(BFloat16 v) { return bits_float(static_cast<uint32_t>(v.bits) << 16); }
inline float to_float(Half16 v) {
  const uint32_t sign = static_cast<uint32_t>(v.bits & 0x8000u) << 16;
  const uint32_t exponent = (v.bits >> 10) & 0x1fu, mantissa = v.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // inf, nan
  if (exponent == 0) {  // zero and subnormals: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return bits_float(sign | float_bits(magnitude));
  }
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

template <class T>
inline T from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }
template <>
inline BFloat16 from_float<BFloat16>(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {0x7fc0};  // nan stays nan
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};  // round to even
}
template <>
inline Half16 from_float<Half16>(float v) {
  uint32_t u = float_bits(v);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return {static_cast<uint16_t>(sign | 0x7e00u)};  // nan
  if (u >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (u < 0x38800000u) {
    // subnormal half: adding 0.5 rounds |v| to a multiple of 2^-24 (to even), left in the
    // low mantissa bits of the sum
    const uint32_t sum = float_bits(bits_float(u) + 0.5f);
    return {static_cast<uint16_t>(sign | (sum - 0x3f000000u))};
  }
  // normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to even
  u += 0xc8000fffu + ((u >> 13) & 1u);
  return {static_cast<uint16_t>(sign | (u >> 13))};
}

}  // namespace infodrop
