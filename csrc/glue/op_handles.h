// Typed dispatcher handles of the infodrop ops, found once per process.  A call through one
// enters the dispatcher at the top, as a torch.ops call does (autocast, autograd, then the
// device's kernel), without torch.ops' generic argument conversion: the autograd node, the
// autocast kernel and the eager binding (csrc/autograd.cpp, autocast.cpp, bindings.cpp) all
// call the ops this way.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>

namespace infodrop {

using ForwardSignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, const at::Tensor&,
    const at::Tensor&, c10::string_view, double, double, bool, bool, bool,
    const std::optional<at::Tensor>&);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    int64_t, const at::Tensor&, const at::Tensor&, c10::string_view, double, double, bool, bool,
    bool, const std::optional<at::Tensor>&);

inline const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("infodrop::information_dropout", "")
                             .typed<ForwardSignature>();
  return op;
}

inline const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("infodrop::information_dropout_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

}  // namespace infodrop
