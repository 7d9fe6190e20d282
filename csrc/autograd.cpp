// Autograd of infodrop::information_dropout, registered for the Autograd dispatch key of every
// device that has kernels (CPU and CUDA).
//
// Why a hand-written graph node, as PyTorch's generated kernels have, and not
// torch.library.register_autograd or torch::autograd::Function: the Python wrapper cost
// ~100 us of host time per forward + backward, and a torch::autograd::Function still a few
// microseconds per layer more than this (its saved options live in a map of IValues, its
// arguments are collected generically), where F.dropout's whole step costs ~20 us
// (docs/performance.md, "Host cost per call").  The forward saves x, alpha_logit and the three
// scalar tensors (never the noise: the backward regenerates it from seed and offset); the
// backward is one call of infodrop::information_dropout_backward.  torch.compile and opcheck
// trace through this kernel with the fake kernels registered in infodrop/_ops.py.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/VariableTypeUtils.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "glue/make_node.h"
#include "glue/op_handles.h"

namespace infodrop {
namespace {

using at::Tensor;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;

// The gradients of the backward op are not differentiable themselves.  Without this, double
// backward would silently return None second derivatives (PyTorch only warns that the op has
// no autograd kernel); with it, differentiating them raises an error that names the op.  The
// error node's next edges are those of the backward's differentiable inputs (grad_z, grad_kl,
// x, alpha_logit, mu, sigma), not of detached copies of the gradients as DelayedError leaves
// them: the engine runs only nodes on a path to what it is asked for, so
// torch.autograd.grad(..., inputs=x, allow_unused=True) and gradgradcheck returned None/zeros.
variable_list once_differentiable(variable_list grads, const variable_list& inputs) {
  if (!at::GradMode::is_enabled() || !torch::autograd::compute_requires_grad(inputs))
    return grads;
  for (Tensor& g : grads)
    if (g.defined()) g = g.detach().set_requires_grad(true);
  torch::autograd::DelayedError error(
      "infodrop::information_dropout: its gradients are not differentiable (no double "
      "backward); use backend='reference' for higher-order derivatives",
      static_cast<int64_t>(grads.size()));
  variable_list out = error.apply(std::move(grads));
  for (const Tensor& g : out)  // one Error node for all of them (DelayedError made one)
    if (g.defined()) {
      g.grad_fn()->set_next_edges(torch::autograd::collect_next_edges(inputs));
      break;
    }
  return out;
}

// The gradient of the per-channel logit bias: grad_alpha_logit summed over every dimension but
// the channels' (dim 1), in the bias's dtype, as a convolution's bias gradient is.
Tensor channel_sums(const Tensor& grad_logit, const Tensor& bias) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < grad_logit.dim(); ++d) dims.push_back(d);
  return grad_logit.sum(dims, /*keepdim=*/false, bias.scalar_type());
}

// The graph node of one call: its next edges are those of x, alpha_logit, mu, sigma and
// logit_bias (an undefined tensor where the call had none), in that order, and apply()
// returns their gradients in that order.
struct InformationDropoutBackward : public torch::autograd::TraceableFunction {
  SavedVariable x, alpha_logit, seed, mu, sigma, logit_bias;
  int64_t offset = 0;
  std::string prior;
  double max_alpha = 0, alpha_min = 0;
  bool mask_inactive = false, unit_mean = false, apply_noise = false;

  std::string name() const override { return "InformationDropoutBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (SavedVariable* v : {&x, &alpha_logit, &seed, &mu, &sigma, &logit_bias}) v->reset_data();
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const Tensor x_ = x.unpack(), logit_ = alpha_logit.unpack();
    const Tensor mu_ = mu.unpack(), sigma_ = sigma.unpack(), bias_ = logit_bias.unpack();
    const std::optional<Tensor> bias_arg =
        bias_.defined() ? std::optional<Tensor>(bias_) : std::nullopt;
    // an output that does not reach the loss hands over no gradient: zeros of its shape
    const Tensor grad_z = grads[0].defined() ? grads[0] : at::zeros_like(x_);
    const Tensor grad_kl =
        grads[1].defined() ? grads[1]
                           : at::zeros({x_.size(0)}, mu_.options().dtype(
                                                         x_.scalar_type() == at::kDouble
                                                             ? at::kDouble
                                                             : at::kFloat));
    variable_list out;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;  // the backward op has no autograd
      auto [grad_x, grad_logit, grad_mu, grad_sigma] = backward_op().call(
          grad_z, grad_kl, x_, logit_, seed.unpack(), offset, mu_, sigma_,
          prior, max_alpha, alpha_min, mask_inactive, unit_mean, apply_noise, bias_arg);
      const Tensor grad_bias =
          bias_.defined() && should_compute_output(4) ? channel_sums(grad_logit, bias_) : Tensor();
      out = variable_list{grad_x, grad_logit, grad_mu, grad_sigma, grad_bias};
    }
    return once_differentiable(std::move(out),
                               {grad_z, grad_kl, x_, logit_, mu_, sigma_, bias_});
  }
};

std::tuple<Tensor, Tensor> information_dropout_autograd(
    const Tensor& x, const Tensor& alpha_logit, const Tensor& seed, int64_t offset,
    const Tensor& mu, const Tensor& sigma, c10::string_view prior, double max_alpha,
    double alpha_min, bool mask_inactive, bool unit_mean, bool apply_noise,
    const std::optional<Tensor>& logit_bias) {
  // PyTorch's custom autograd has no forward-mode derivative here; say so by name rather than
  // let tangents be dropped (a dual tensor at the default level is what
  // torch.autograd.forward_ad and torch.func.jvp make).
  const Tensor bias = logit_bias.value_or(Tensor());
  for (const Tensor* t : {&x, &alpha_logit, &mu, &sigma, &bias})
    TORCH_CHECK(!t->defined() || !t->_fw_grad(/*level=*/0).defined(),
                "infodrop::information_dropout: forward-mode AD (jvp) is not implemented; use "
                "backend='reference' for forward-mode derivatives");
  decltype(make_node<InformationDropoutBackward>()) node;
  if (torch::autograd::compute_requires_grad(x, alpha_logit, mu, sigma, bias)) {
    node = make_node<InformationDropoutBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, alpha_logit, mu, sigma, bias));
    node->x = SavedVariable(x, false);
    node->alpha_logit = SavedVariable(alpha_logit, false);
    node->seed = SavedVariable(seed, false);
    node->mu = SavedVariable(mu, false);
    node->sigma = SavedVariable(sigma, false);
    node->logit_bias = SavedVariable(bias, false);
    node->offset = offset;
    node->prior = std::string(prior);
    node->max_alpha = max_alpha;
    node->alpha_min = alpha_min;
    node->mask_inactive = mask_inactive;
    node->unit_mean = unit_mean;
    node->apply_noise = apply_noise;
  }
  auto [z, kl] = [&] {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return forward_op().call(x, alpha_logit, seed, offset, mu, sigma, prior, max_alpha,
                             alpha_min, mask_inactive, unit_mean, apply_noise, logit_bias);
  }();
  if (node) torch::autograd::set_history({z, kl}, node);
  return {z, kl};
}

}  // namespace
}  // namespace infodrop

TORCH_LIBRARY_IMPL(infodrop, Autograd, m) {
  m.impl("information_dropout", &infodrop::information_dropout_autograd);
}
