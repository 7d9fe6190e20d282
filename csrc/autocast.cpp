// The autocast rule of infodrop::information_dropout (docs/spec.md section 4): under
// torch.autocast, alpha_logit is cast to the dtype of x, and the op runs in x's dtype.
//
// Why x's dtype, and not autocast's lower-precision dtype or the wider of the two: the layer sits
// in the activation stream as dropout does, and like dropout it never changes the stream's dtype
// (z has x's dtype; an fp32 stream after a LayerNorm stays fp32, a bf16 stream stays bf16 and
// keeps its memory).  alpha_logit only sets the noise scale through a sigmoid, so rounding it to
// a half type costs nothing that matters.  logit_bias keeps its dtype: the kernels add it in
// their compute dtype (float32; float64 for float64 x), as a parameter is kept.  Why a kernel
// of our own and not torch.library.register_autocast: that casts every floating input to one
// fixed dtype, which cannot say "the dtype of x".
//
// The Python API applies the same rule before it checks its arguments (infodrop/functional.py),
// so every backend sees one dtype; this kernel gives the raw op the rule.  The backward op needs
// none: its inputs are the forward's saved tensors and z's gradient, all of x's dtype.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "glue/op_handles.h"

namespace infodrop {
namespace {

using at::Tensor;

template <c10::DeviceType device_type>
std::tuple<Tensor, Tensor> information_dropout_autocast(
    const Tensor& x, const Tensor& alpha_logit, const Tensor& seed, int64_t offset,
    const Tensor& mu, const Tensor& sigma, c10::string_view prior, double max_alpha,
    double alpha_min, bool mask_inactive, bool unit_mean, bool apply_noise,
    const std::optional<Tensor>& logit_bias) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  // only a floating x defines a dtype to cast to; anything else reaches the op's own checks
  const bool cast = x.is_floating_point() && alpha_logit.is_floating_point() &&
                    alpha_logit.scalar_type() != x.scalar_type();
  return forward_op().call(x, cast ? alpha_logit.to(x.scalar_type()) : alpha_logit, seed, offset,
                           mu, sigma, prior, max_alpha, alpha_min, mask_inactive, unit_mean,
                           apply_noise, logit_bias);
}

}  // namespace
}  // namespace infodrop

TORCH_LIBRARY_IMPL(infodrop, AutocastCPU, m) {
  m.impl("information_dropout", &infodrop::information_dropout_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(infodrop, AutocastCUDA, m) {
  m.impl("information_dropout", &infodrop::information_dropout_autocast<c10::DeviceType::CUDA>);
}
