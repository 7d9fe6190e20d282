// The infodrop operator library: schemas only.  Each backend registers its kernels for its
// dispatch key (cpu/ops_cpu.cpp, cuda/ops_cuda.cpp); Python adds the fake kernels and autograd
// (infodrop/_ops.py).  csrc/README.md maps the layers below.
//
// The seed is a 0-dim int64 tensor holding the 64-bit seed's bits, so that it can be drawn from
// a torch generator on the inputs' device without a host synchronisation and be traced by
// torch.compile.  offset is the second half of the Philox counter (uint64 bits in an int).
// logit_bias: a per-channel bias (dim 1 of x) added to alpha_logit before the sigmoid, as an
// alpha head's convolution would add it; its gradient is the channel sums of grad_alpha_logit
// (autograd.cpp).
#include <torch/library.h>

TORCH_LIBRARY(infodrop, m) {
  m.def(
      "information_dropout(Tensor x, Tensor alpha_logit, Tensor seed, int offset, Tensor mu, "
      "Tensor sigma, str prior, float max_alpha, float alpha_min, bool mask_inactive, "
      "bool unit_mean, bool apply_noise, Tensor? logit_bias=None) -> (Tensor z, Tensor kl)");
  m.def(
      "information_dropout_backward(Tensor grad_z, Tensor grad_kl, Tensor x, Tensor alpha_logit, "
      "Tensor seed, int offset, Tensor mu, Tensor sigma, str prior, float max_alpha, "
      "float alpha_min, bool mask_inactive, bool unit_mean, bool apply_noise, "
      "Tensor? logit_bias=None) "
      "-> (Tensor grad_x, Tensor grad_alpha_logit, Tensor grad_mu, Tensor grad_sigma)");
  // Fills out (float32) with the noise stream at indices start .. start + numel - 1.
  m.def("noise_(Tensor(a!) out, Tensor seed, int offset, int start) -> ()");
}
