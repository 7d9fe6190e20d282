// The CPU kernels for the build's baseline instruction set (SSE2 on x86-64: 4 float lanes),
// which runs on every CPU the wheel installs on.
#if defined(__SSE2__)
#define INFODROP_TARGET_SSE2 1
#endif
#define INFODROP_SIMD_BYTES 16
#define INFODROP_ISA baseline
#include "cpu/kernel_impl.h"

infodrop::cpu::Segments infodrop::cpu::baseline_segments() { return baseline::segments("baseline"); }
