// Autograd of infodrop::information_dropout, registered for the Autograd dispatch key of every
// device that has kernels (CPU and CUDA).
//
// Why C++ and not torch.library.register_autograd: the Python wrapper costs ~100 us of host
// time per forward + backward (argument normalisation on every call, a Python backward run by
// the engine), 4x F.dropout's whole step, which would make GPU training launch-bound
// (docs/performance.md, "Host time per call").  Here the forward saves x, alpha_logit and the
// three scalar tensors (never the noise: the backward regenerates it from seed and offset) and
// the backward is one call of infodrop::information_dropout_backward.  torch.compile and
// opcheck trace through it with the fake kernels registered in infodrop/_ops.py.
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/library.h>

#include <string>

namespace infodrop {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSignature = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                    int64_t, const Tensor&, const Tensor&,
                                                    c10::string_view, double, double, bool, bool,
                                                    bool);
using BackwardSignature = std::tuple<Tensor, Tensor, Tensor, Tensor>(
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t,
    const Tensor&, const Tensor&, c10::string_view, double, double, bool, bool, bool);

constexpr int kForwardArguments = 12;

// The gradients of the backward op are not differentiable themselves.  Without this, double
// backward would silently return None second derivatives (PyTorch only warns that the op has
// no autograd kernel); with it, differentiating them raises an error that names the op, as
// torch.autograd.function.once_differentiable does for Python functions.
variable_list once_differentiable(variable_list grads, bool any_input_requires_grad) {
  if (!at::GradMode::is_enabled() || !any_input_requires_grad) return grads;
  for (Tensor& g : grads)
    if (g.defined()) g = g.detach().set_requires_grad(true);
  torch::autograd::DelayedError error(
      "infodrop::information_dropout: its gradients are not differentiable (no double "
      "backward); use backend='reference' for higher-order derivatives",
      static_cast<int64_t>(grads.size()));
  return error.apply(std::move(grads));
}

class InformationDropout : public torch::autograd::Function<InformationDropout> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& alpha_logit,
                               const Tensor& seed, int64_t offset, const Tensor& mu,
                               const Tensor& sigma, c10::string_view prior, double max_alpha,
                               double alpha_min, bool mask_inactive, bool unit_mean,
                               bool apply_noise) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("infodrop::information_dropout", "")
                               .typed<ForwardSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [z, kl] = op.call(x, alpha_logit, seed, offset, mu, sigma, prior, max_alpha, alpha_min,
                           mask_inactive, unit_mean, apply_noise);
    ctx->save_for_backward({x, alpha_logit, seed, mu, sigma});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["prior"] = std::string(prior);
    ctx->saved_data["max_alpha"] = max_alpha;
    ctx->saved_data["alpha_min"] = alpha_min;
    ctx->saved_data["mask_inactive"] = mask_inactive;
    ctx->saved_data["unit_mean"] = unit_mean;
    ctx->saved_data["apply_noise"] = apply_noise;
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("infodrop::information_dropout_backward", "")
                               .typed<BackwardSignature>();
    const variable_list saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &alpha_logit = saved[1], &seed = saved[2], &mu = saved[3],
                 &sigma = saved[4];
    const auto& data = ctx->saved_data;
    const std::string prior = data.at("prior").toStringRef();
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // the backward op has no autograd
    auto [grad_x, grad_logit, grad_mu, grad_sigma] =
        op.call(grads[0], grads[1], x, alpha_logit, seed, data.at("offset").toInt(), mu, sigma,
                prior, data.at("max_alpha").toDouble(), data.at("alpha_min").toDouble(),
                data.at("mask_inactive").toBool(), data.at("unit_mean").toBool(),
                data.at("apply_noise").toBool());
    bool any_requires_grad = false;
    const Tensor* inputs[] = {&grads[0], &grads[1], &x, &alpha_logit, &mu, &sigma};
    for (const Tensor* t : inputs)
      any_requires_grad |= t->defined() && t->requires_grad();
    variable_list differentiable = once_differentiable(
        {grad_x, grad_logit, grad_mu, grad_sigma}, any_requires_grad);
    variable_list out(kForwardArguments);
    out[0] = differentiable[0];
    out[1] = differentiable[1];
    out[4] = differentiable[2];
    out[5] = differentiable[3];
    return out;
  }
};

std::tuple<Tensor, Tensor> information_dropout_autograd(
    const Tensor& x, const Tensor& alpha_logit, const Tensor& seed, int64_t offset,
    const Tensor& mu, const Tensor& sigma, c10::string_view prior, double max_alpha,
    double alpha_min, bool mask_inactive, bool unit_mean, bool apply_noise) {
  // PyTorch's C++ custom functions have no forward-mode derivative; say so by name rather than
  // with PyTorch's generic message (a dual tensor at the default level is what
  // torch.autograd.forward_ad makes).
  for (const Tensor* t : {&x, &alpha_logit, &mu, &sigma})
    TORCH_CHECK(!t->_fw_grad(/*level=*/0).defined(),
                "infodrop::information_dropout: forward-mode AD (jvp) is not implemented; use "
                "backend='reference' for forward-mode derivatives");
  variable_list out = InformationDropout::apply(x, alpha_logit, seed, offset, mu, sigma, prior,
                                                max_alpha, alpha_min, mask_inactive, unit_mean,
                                                apply_noise);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace infodrop

TORCH_LIBRARY_IMPL(infodrop, Autograd, m) {
  m.impl("information_dropout", &infodrop::information_dropout_autograd);
}
