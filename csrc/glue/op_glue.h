// The PyTorch-facing glue shared by every device's implementation of the infodrop ops: the
// argument checks (so that a direct torch.ops.infodrop call gets the same clear errors as the
// Python API) and the tensors the kernels walk: the caller's own where their layout is one the
// kernels walk in place (infodrop/layout.h), else working copies.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "infodrop/elementwise.h"
#include "infodrop/layout.h"

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

// t in dtype `want`: the tensor itself when it already is (Tensor::to would still go through
// the dispatcher, a few hundred nanoseconds of host time on every call).
inline at::Tensor as_dtype(const at::Tensor& t, at::ScalarType want) {
  return t.scalar_type() == want ? t : t.to(want);
}

// logit_bias (docs/spec.md section 4): one floating-point value per channel of x (dim 1), on
// x's device.
inline void check_logit_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x) {
  if (!bias) return;
  TORCH_CHECK(x.dim() >= 2, "infodrop: logit_bias needs an x with channels (dim 1), got x of "
              "shape ", x.sizes());
  TORCH_CHECK(bias->dim() == 1 && bias->size(0) == x.size(1), "infodrop: logit_bias must have "
              "shape (", x.size(1), ",), one value per channel of x, got ", bias->sizes());
  TORCH_CHECK(at::isFloatingType(bias->scalar_type()),
              "infodrop: logit_bias must be a floating-point tensor, got ", bias->scalar_type());
  TORCH_CHECK(bias->device() == x.device(), "infodrop: logit_bias must be on the device of x (",
              x.device(), "), got ", bias->device());
}

// alpha_logit + logit_bias for the kernels that do not add the bias themselves (all but CUDA's
// channels-last walk): one pass, the float32 (float64) sum rounded to alpha_logit's dtype (for
// 16-bit types within their tolerance of the unrounded sum the fusing kernels use), in
// alpha_logit's layout.
inline at::Tensor logit_with_bias(const at::Tensor& alpha_logit,
                                  const std::optional<at::Tensor>& bias) {
  if (!bias) return alpha_logit;
  std::vector<int64_t> shape(alpha_logit.dim(), 1);
  shape[1] = bias->size(0);
  at::Tensor sum = at::empty_like(alpha_logit);
  // the bias in the compute dtype first, as the kernels and the reference take it (a float64
  // bias would otherwise make a float32 call's sum float64)
  return at::add_out(sum, alpha_logit,
                     as_dtype(*bias, kl_dtype(alpha_logit.scalar_type())).view(shape));
}

inline void check_grads(const at::Tensor& grad_z, const at::Tensor& grad_kl, const at::Tensor& x) {
  TORCH_CHECK(grad_z.sizes() == x.sizes(), "infodrop: grad_z must have the shape of x");
  TORCH_CHECK(grad_kl.dim() == 1 && grad_kl.size(0) == x.size(0),
              "infodrop: grad_kl must have shape (", x.size(0), ",)");
}

// The layout the kernels walk for x: its own where it is channels-first or channels-last
// (infodrop/layout.h), with the batch dimension outermost and every sample dense; nullopt for
// any other strides, which the kernels read through a contiguous copy.  Size-1 dimensions may
// have any stride (PyTorch leaves them arbitrary), so they are skipped when checking.
inline std::optional<SampleLayout> walkable_layout(const at::Tensor& x) {
  const int64_t dims = x.dim();
  const int64_t samples = x.size(0);
  const int64_t per_sample = samples == 0 ? 0 : x.numel() / samples;
  if (x.is_contiguous()) return SampleLayout{1, per_sample, false};
  if (dims < 3 || x.numel() == 0) return std::nullopt;
  // channels-last: strides of a contiguous tensor of the permuted shape (B, d2, ..., dk, C)
  int64_t expected = 1;
  auto matches = [&](int64_t d) {
    const bool ok = x.size(d) == 1 || x.stride(d) == expected;
    expected *= x.size(d);
    return ok;
  };
  if (!matches(1)) return std::nullopt;
  for (int64_t d = dims - 1; d >= 2; --d)
    if (!matches(d)) return std::nullopt;
  if (!matches(0)) return std::nullopt;
  return SampleLayout{x.size(1), per_sample / std::max<int64_t>(x.size(1), 1), true};
}

// Whether a backend's kernels walk channels-last tensors in place (csrc/infodrop/layout.h);
// a backend that does not is handed contiguous copies.
enum class ChannelsLast { Copied, InPlace };

// t with the strides of `like` (same sizes): t itself where they match, else a copy.  Used for
// an input whose layout differs from x's (an alpha head that returns another memory format):
// the kernels walk one layout, and copying the odd input costs one pass over it, not over x.
inline at::Tensor with_strides_of(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

// An output laid out as empty_like(`like`) (the caller's memory format) and the buffer the
// kernels write, laid out as the kernels' `walked` tensor: the output itself where the two
// agree, else a scratch that finish() copies back.
struct KernelOutput {
  at::Tensor result, work;
  KernelOutput(const at::Tensor& like, const at::Tensor& walked)
      : result(at::empty_like(like)),
        work(result.strides() == walked.strides() ? result : at::empty_like(walked)) {}
  at::Tensor finish() {
    if (!result.is_same(work)) result.copy_(work);
    return result;
  }
};

// x as the kernels walk it (itself, or a contiguous copy), and the layout of that walk.
struct WalkedX {
  at::Tensor x;
  SampleLayout layout;
};

inline WalkedX walked_x(const at::Tensor& x, ChannelsLast support) {
  std::optional<SampleLayout> layout = walkable_layout(x);
  if (layout && (!layout->channels_last || support == ChannelsLast::InPlace)) return {x, *layout};
  const int64_t samples = x.size(0);
  return {x.contiguous(), SampleLayout{1, samples == 0 ? 0 : x.numel() / samples, false}};
}

// What a forward kernel reads and writes: x, alpha_logit in x's walked layout, and z.
struct ForwardIO {
  at::Tensor x, logit;
  KernelOutput z;
  SampleLayout layout;
};

inline ForwardIO forward_io(const at::Tensor& x, const at::Tensor& alpha_logit,
                            ChannelsLast support) {
  WalkedX walked = walked_x(x, support);
  return {walked.x, with_strides_of(alpha_logit, walked.x), KernelOutput(x, walked.x),
          walked.layout};
}

// What a backward kernel reads and writes; grad_z in x's dtype and grad_kl in the KL's dtype
// (autograd may hand over other dtypes, or an expanded grad_z); grad_logit comes back in
// alpha_logit's memory format.
struct BackwardIO {
  at::Tensor grad_z, grad_kl, x, logit;
  KernelOutput grad_x, grad_logit;
  SampleLayout layout;
};

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
                              const at::Tensor& x, const at::Tensor& alpha_logit,
                              ChannelsLast support) {
  WalkedX walked = walked_x(x, support);
  return {with_strides_of(as_dtype(grad_z, x.scalar_type()), walked.x),
          as_dtype(grad_kl, kl_dtype(x.scalar_type())).contiguous(),
          walked.x,
          with_strides_of(alpha_logit, walked.x),
          KernelOutput(x, walked.x),
          KernelOutput(alpha_logit, walked.x),
          walked.layout};
}

}  // namespace infodrop
