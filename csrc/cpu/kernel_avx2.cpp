// The CPU kernels for AVX2 + FMA (8 float lanes).  Chosen at run time by ops_cpu.cpp.
#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#define INFODROP_TARGET_AVX2 1
#define INFODROP_SIMD_BYTES 32
#define INFODROP_ISA avx2
#include "cpu/kernel_impl.h"

infodrop::cpu::Segments infodrop::cpu::avx2_segments() { return avx2::segments("avx2"); }
#else
#include "cpu/segments.h"
infodrop::cpu::Segments infodrop::cpu::avx2_segments() { return baseline_segments(); }
#endif
