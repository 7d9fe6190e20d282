// Each approximation of csrc/infodrop/device_math.h on the GPU against float64 on the host, on a
// dense sweep of the range its callers give it (exhaustive where the argument is a uniform of the
// noise stream).  Prints one line per function: name, largest error, kind (rel or abs).
// Built and run by tests/test_device_math.py.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "infodrop/device_math.h"

using namespace infodrop;

enum Fn {
  kExpFinite, kEx2, kSigmoid, kOneMinusSigmoid, kLog, kRcp, kSqrt, kMinusTwoLogU,
  kMinusTwoLogULog2, kSin, kCos
};

__global__ void evaluate(int fn, const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = in[i];
  float y = 0.0f, s, c;
  switch (fn) {
    case kExpFinite: y = device::exp_finite(x); break;
    case kEx2: y = device::ex2(x); break;
    case kSigmoid: device::sigmoid(x, y, s); break;
    case kOneMinusSigmoid: device::sigmoid(x, s, y); break;
    case kLog: y = device::log(x); break;
    case kRcp: y = device::rcp(x); break;
    case kSqrt: y = device::sqrt_of_normal(x); break;
    case kMinusTwoLogU: y = device::minus_two_log_uniform(x); break;
    case kMinusTwoLogULog2: y = device::minus_two_log_uniform<true>(x); break;
    case kSin: device::sincos_2pi_from_mantissa(x, y, c); break;
    case kCos: device::sincos_2pi_from_mantissa(x, s, y); break;
  }
  out[i] = y;
}

static void check(cudaError_t e) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA: %s\n", cudaGetErrorString(e));
    std::exit(2);
  }
}

static std::vector<float> run(int fn, const std::vector<float>& in) {
  const int n = static_cast<int>(in.size());
  float *d_in, *d_out;
  check(cudaMalloc(&d_in, n * sizeof(float)));
  check(cudaMalloc(&d_out, n * sizeof(float)));
  check(cudaMemcpy(d_in, in.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  evaluate<<<(n + 255) / 256, 256>>>(fn, d_in, d_out, n);
  check(cudaGetLastError());
  std::vector<float> out(n);
  check(cudaMemcpy(out.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost));
  check(cudaFree(d_in));
  check(cudaFree(d_out));
  return out;
}

static std::vector<float> linspace(double lo, double hi, int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(lo + (hi - lo) * i / (n - 1));
  return v;
}

// every float in [lo, hi) with a step of `stride` bit patterns
static std::vector<float> floats(float lo, float hi, int stride) {
  std::vector<float> v;
  for (float x = lo; x < hi;) {
    v.push_back(x);
    unsigned bits;
    std::memcpy(&bits, &x, 4);
    bits += stride;
    std::memcpy(&x, &bits, 4);
  }
  return v;
}

// name, fn, inputs, reference, absolute (else relative) where abs_where(x) holds
template <class Ref, class Abs>
static void report(const char* name, int fn, const std::vector<float>& in, Ref ref, Abs abs_where) {
  const std::vector<float> out = run(fn, in);
  double worst_rel = 0, worst_abs = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const double want = ref(static_cast<double>(in[i])), got = out[i];
    const double err = std::fabs(got - want);
    if (abs_where(in[i])) {
      worst_abs = std::fmax(worst_abs, err);
    } else {
      worst_rel = std::fmax(worst_rel, err / std::fabs(want));
    }
    if (std::isnan(got) != std::isnan(want)) worst_rel = INFINITY;
  }
  std::printf("%s rel %.6g abs %.6g\n", name, worst_rel, worst_abs);
}

int main() {
  const double two_pi = 6.283185307179586476925;
  const auto never = [](float) { return false; };
  const auto always = [](float) { return true; };
  report("exp_finite", kExpFinite, linspace(-86, 86, 1 << 24),
         [](double x) { return std::exp(x); }, never);
  // the noise factor 2^y (y = log n log2 e: the kernels' noise in powers of 2), every exponent
  // of a normal result
  report("ex2", kEx2, linspace(-125, 127.5, 1 << 24), [](double x) { return std::exp2(x); }, never);
  const std::vector<float> logit = linspace(-86, 86, 1 << 24);
  report("sigmoid", kSigmoid, logit, [](double x) { return 1 / (1 + std::exp(-x)); }, never);
  report("one_minus_sigmoid", kOneMinusSigmoid, logit,
         [](double x) { return std::exp(-x) / (1 + std::exp(-x)); }, never);
  // every 7th float from FLT_MIN to 2^127: absolute in [0.5, 2], relative elsewhere
  report("log", kLog, floats(1.17549435e-38f, 1.7e38f, 7), [](double x) { return std::log(x); },
         [](float x) { return x >= 0.5f && x <= 2.0f; });
  report("rcp", kRcp, floats(1.17549435e-38f, 8.5e37f, 7), [](double x) { return 1 / x; }, never);
  report("sqrt_of_normal", kSqrt, floats(5.9604645e-8f, 72.0f, 3), [](double x) { return std::sqrt(x); },
         never);
  // the noise stream's uniforms, every one: u = k 2^-23 + 2^-24, and their mantissas 1 + k 2^-23
  std::vector<float> u(1 << 23), m(1 << 23);
  for (int k = 0; k < (1 << 23); ++k) {
    u[k] = static_cast<float>(k * 0x1p-23 + 0x1p-24);
    m[k] = static_cast<float>(1 + k * 0x1p-23);
  }
  report("minus_two_log_uniform", kMinusTwoLogU, u, [](double x) { return -2 * std::log(x); },
         never);
  report("minus_two_log_uniform_log2", kMinusTwoLogULog2, u,
         [](double x) { return -2 * std::log(x) * device::kLog2eSquared; }, never);
  const auto uniform = [](double mantissa) { return (mantissa - 1) + 0x1p-24; };
  report("sin_2pi", kSin, m, [&](double x) { return std::sin(two_pi * uniform(x)); }, always);
  report("cos_2pi", kCos, m, [&](double x) { return std::cos(two_pi * uniform(x)); }, always);
  return 0;
}
