// Philox4x32-10 (Salmon et al., SC'11), the counter-based generator behind the noise stream of
// docs/spec.md section 3.  Templated on the 32-bit lane type U so that one source serves a CUDA
// thread (uint32_t) and a CPU vector of counters (csrc/cpu/simd.h).
#pragma once

#include "infodrop/lanes.h"

namespace infodrop {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;

template <class U>
struct Philox4 {
  U r0, r1, r2, r3;
};

// counter = (c0, c1, c2, c3), key = (k0, k1); the key is the same for every lane, hence scalar.
template <class U>
INFODROP_HD Philox4<U> philox4x32_10(U c0, U c1, U c2, U c3, uint32_t k0, uint32_t k1) {
INFODROP_UNROLL
  for (int round = 0; round < 10; ++round) {
    U hi0, lo0, hi1, lo1;
    mulhilo(c0, kPhiloxM0, hi0, lo0);
    mulhilo(c2, kPhiloxM1, hi1, lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {c0, c1, c2, c3};
}

}  // namespace infodrop
