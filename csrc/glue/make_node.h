// The one place that knows how torch's autograd graph holds its nodes: std::shared_ptr<Node> in
// torch 2.11, c10::intrusive_ptr<Node> in 2.14 (the range setup.py states and make test runs).
// The pointer type is read off torch::autograd::Edge, which every version has, rather than
// guessed from TORCH_VERSION macros, so set_history gets the type its torch takes.
#pragma once

#include <torch/csrc/autograd/edge.h>

#include <memory>
#include <type_traits>

namespace infodrop {

using NodePtr = decltype(torch::autograd::Edge::function);

// A new graph node of type T, in the pointer type the installed torch's graph holds.
template <typename T>
auto make_node() {
  if constexpr (std::is_same_v<NodePtr, std::shared_ptr<torch::autograd::Node>>)
    return std::make_shared<T>();
  else
    return c10::make_intrusive<T>();
}

}  // namespace infodrop
