// One element of the CUDA kernels' special-function path (csrc/infodrop/elementwise.h), forward
// and backward, with the options folded into constants (as on an all-in-range step) and as
// run-time values (as next to a logit beyond +-80).  tests/test_device_rounding.py compiles it
// with nvcc's contraction on and off (-fmad) and wants the same SASS: then nvcc decides no
// multiply-add's rounding itself, and folding the options cannot change an element's bits.
#include "infodrop/elementwise.h"

using infodrop::BackwardOut;
using infodrop::DeviceMath;
using infodrop::ForwardOut;
using infodrop::Params;

__device__ void forward(const float* in, float* out, const Params<float>& p) {
  DeviceMath math;
  const ForwardOut<float> o = infodrop::forward_element_with(math, in[0], in[1], in[2], p);
  out[0] = o.z;
  out[1] = o.kl;
}

__device__ void backward(const float* in, float* out, const Params<float>& p) {
  DeviceMath math;
  const BackwardOut<float> o =
      infodrop::backward_element_with(math, in[0], in[1], in[2], in[3], in[4], p);
  out[0] = o.grad_x;
  out[1] = o.grad_logit;
  out[2] = o.dmu;
  out[3] = o.dsigma;
}

__global__ void forward_runtime(const float* in, float* out, Params<float> p) { forward(in, out, p); }
__global__ void forward_folded(const float* in, float* out, Params<float> p) {
  infodrop::with_options_known(p, [&](const Params<float>& q) { forward(in, out, q); });
}
__global__ void backward_runtime(const float* in, float* out, Params<float> p) {
  backward(in, out, p);
}
__global__ void backward_folded(const float* in, float* out, Params<float> p) {
  infodrop::with_options_known(p, [&](const Params<float>& q) { backward(in, out, q); });
}
