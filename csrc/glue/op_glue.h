// The PyTorch-facing glue shared by every device's implementation of the infodrop ops: the
// argument checks (so that a direct torch.ops.infodrop call gets the same clear errors as the
// Python API) and the contiguous working copies the kernels read and write.  The kernels
// themselves see raw pointers in logical (row-major) order only.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>

#include "infodrop/elementwise.h"

namespace infodrop {

struct OpOptions {
  Prior prior;
  double max_alpha, alpha_min;
  bool mask_inactive, unit_mean, apply_noise;
};

// float32 sums for half, bfloat16 and float inputs; float64 for float64 (docs/spec.md section 1).
inline at::ScalarType kl_dtype(at::ScalarType x) {
  return x == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_seed(const at::Tensor& seed) {
  TORCH_CHECK(seed.scalar_type() == at::kLong && seed.numel() == 1,
              "infodrop: seed must be a one-element int64 tensor, got ", seed.scalar_type(),
              " with ", seed.numel(), " elements");
}

inline OpOptions check_op_inputs(const at::Tensor& x, const at::Tensor& alpha_logit,
                                 const at::Tensor& seed, const at::Tensor& mu,
                                 const at::Tensor& sigma, c10::string_view prior,
                                 double max_alpha, double alpha_min, bool mask_inactive,
                                 bool unit_mean, bool apply_noise) {
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "infodrop: x must be a floating-point tensor, got ", x.scalar_type());
  TORCH_CHECK(alpha_logit.scalar_type() == x.scalar_type(),
              "infodrop: alpha_logit must have the dtype of x (", x.scalar_type(), "), got ",
              alpha_logit.scalar_type());
  TORCH_CHECK(alpha_logit.sizes() == x.sizes(), "infodrop: alpha_logit must have the shape of x ",
              x.sizes(), ", got ", alpha_logit.sizes());
  TORCH_CHECK(alpha_logit.device() == x.device(), "infodrop: alpha_logit must be on the device of x (",
              x.device(), "), got ", alpha_logit.device());
  TORCH_CHECK(x.dim() >= 1, "infodrop: x must have a batch dimension, got a 0-dim tensor");
  check_seed(seed);
  for (const auto* t : {&mu, &sigma})
    TORCH_CHECK(t->numel() == 1 && at::isFloatingType(t->scalar_type()),
                "infodrop: ", t == &mu ? "mu" : "sigma",
                " must be a one-element floating-point tensor");
  TORCH_CHECK(std::isfinite(max_alpha) && max_alpha > 0,
              "infodrop: max_alpha must be a positive number, got ", max_alpha);
  TORCH_CHECK(std::isfinite(alpha_min) && alpha_min >= 0,
              "infodrop: alpha_min must be a non-negative number, got ", alpha_min);
  // The kernels compute in float32 (but for float64 inputs) with 1 / (alpha_min + max_alpha):
  // beyond 2^126 it is subnormal and loses bits, beyond FLT_MAX the cap itself is inf and the KL
  // NaN.  No other bound is needed: exp overflows to inf as the reference's does.
  TORCH_CHECK(alpha_min + max_alpha < 0x1p126,
              "infodrop: alpha_min + max_alpha must be below 2^126 (8.5e37), so that the cap and "
              "its reciprocal are normal float32 numbers, got ", alpha_min + max_alpha);
  TORCH_CHECK(prior == "log_uniform" || prior == "log_normal",
              "infodrop: prior must be 'log_uniform' or 'log_normal', got '", prior, "'");
  return {prior == "log_uniform" ? Prior::LogUniform : Prior::LogNormal, max_alpha, alpha_min,
          mask_inactive, unit_mean, apply_noise};
}

inline void check_grads(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& x) {
  TORCH_CHECK(grad_z.sizes() == x.sizes(), "infodrop: grad_z must have the shape of x");
  TORCH_CHECK(grad_kl.dim() == 1 && grad_kl.size(0) == x.size(0),
              "infodrop: grad_kl must have shape (", x.size(0), ",)");
}

// An output laid out like `like` (as empty_like: channels_last stays channels_last) and the
// contiguous buffer the kernels write: the output itself where it is contiguous, else a scratch
// that finish() copies back.
struct ContiguousOutput {
  at::Tensor result, work;
  explicit ContiguousOutput(const at::Tensor& like)
      : result(at::empty_like(like)),
        work(result.is_contiguous() ? result : at::empty_like(like, at::MemoryFormat::Contiguous)) {}
  at::Tensor finish() {
    if (!result.is_same(work)) result.copy_(work);
    return result;
  }
};

// What a forward kernel reads and writes: the inputs in logical order, and z.
struct ForwardIO {
  at::Tensor x, logit;
  ContiguousOutput z;
};

inline ForwardIO forward_io(const at::Tensor& x, const at::Tensor& alpha_logit) {
  return {x.contiguous(), alpha_logit.contiguous(), ContiguousOutput(x)};
}

// What a backward kernel reads and writes; grad_z in x's dtype and grad_kl in the KL's dtype
// (autograd may hand over other dtypes, or an expanded grad_z).
struct BackwardIO {
  at::Tensor grad_z, grad_kl, x, logit;
  ContiguousOutput grad_x, grad_logit;
};

// t in dtype `want`: the tensor itself when it already is (Tensor::to would still go through
// the dispatcher, a few hundred nanoseconds of host time on every call).
inline at::Tensor as_dtype(const at::Tensor& t, at::ScalarType want) {
  return t.scalar_type() == want ? t : t.to(want);
}

// The value of a one-element CPU tensor, read directly: Tensor::item goes through the
// dispatcher, and the ops read three such scalars (seed, mu, sigma) per call.
template <class T>
T cpu_scalar(const at::Tensor& t) {
  T value{};
  AT_DISPATCH_ALL_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "infodrop_cpu_scalar",
                             [&] { value = static_cast<T>(*t.const_data_ptr<scalar_t>()); });
  return value;
}

inline BackwardIO backward_io(const at::Tensor& grad_z, const at::Tensor& grad_kl,
                              const at::Tensor& x, const at::Tensor& alpha_logit) {
  return {as_dtype(grad_z, x.scalar_type()).contiguous(),
          as_dtype(grad_kl, kl_dtype(x.scalar_type())).contiguous(),
          x.contiguous(),
          alpha_logit.contiguous(),
          ContiguousOutput(x),
          ContiguousOutput(alpha_logit)};
}

}  // namespace infodrop
