// The CPU kernels for AVX-512 (16 float lanes).  Chosen at run time by ops_cpu.cpp.
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
#define INFODROP_TARGET_AVX512 1
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12's AVX-512 intrinsics initialise their "undefined" operands from themselves
// (__m512 __Y = __Y), which -Wuninitialized reports wherever one is inlined (GCC bug 105593).
// The same kernel source keeps these warnings in the AVX2 and baseline files.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define INFODROP_SIMD_BYTES 64
#define INFODROP_ISA avx512
#include "cpu/kernel_impl.h"

infodrop::cpu::Segments infodrop::cpu::avx512_segments() { return avx512::segments("avx512"); }
#else
#include "cpu/segments.h"
infodrop::cpu::Segments infodrop::cpu::avx512_segments() { return baseline_segments(); }
#endif
