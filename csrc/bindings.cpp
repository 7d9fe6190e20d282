// The Python module infodrop._C: importing it registers the ops (static initialisers of the
// other files), and it binds one direct entry to the forward op for eager calls.
//
// Why a binding when torch.ops.infodrop.information_dropout exists: torch.ops converts its
// twelve arguments through the generic schema-driven path (about 4 us per call), which alone
// costs most of F.dropout's whole forward.  This typed binding reaches the same dispatcher
// entry (autograd, kernels, dispatch modes) in well under a microsecond of argument handling.
// infodrop/functional.py uses it only where nothing else needs to see the call: eager mode,
// plain tensors, no __torch_function__ mode; torch.compile and subclasses go through torch.ops.
#include <torch/extension.h>

#include <optional>
#include <string>
#include <tuple>

#include "glue/op_handles.h"

namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> information_dropout(const Tensor& x, const Tensor& alpha_logit,
                                               const Tensor& seed, int64_t offset,
                                               const Tensor& mu, const Tensor& sigma,
                                               const std::string& prior, double max_alpha,
                                               double alpha_min, bool mask_inactive,
                                               bool unit_mean, bool apply_noise,
                                               const std::optional<Tensor>& logit_bias) {
  return infodrop::forward_op().call(x, alpha_logit, seed, offset, mu, sigma, prior, max_alpha,
                                     alpha_min, mask_inactive, unit_mean, apply_noise,
                                     logit_bias);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.def("information_dropout", &information_dropout,
        "torch.ops.infodrop.information_dropout for eager calls (see csrc/bindings.cpp)",
        pybind11::arg("x"), pybind11::arg("alpha_logit"), pybind11::arg("seed"),
        pybind11::arg("offset"), pybind11::arg("mu"), pybind11::arg("sigma"),
        pybind11::arg("prior"), pybind11::arg("max_alpha"), pybind11::arg("alpha_min"),
        pybind11::arg("mask_inactive"), pybind11::arg("unit_mean"), pybind11::arg("apply_noise"),
        pybind11::arg("logit_bias") = pybind11::none());
}
