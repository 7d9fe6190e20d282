// CUDA implementations of the infodrop ops (registered for the CUDA dispatch key of the schemas
// in csrc/ops.cpp): argument and device checks, output allocation, the device guard and
// current stream, and the final per-sample sums of the kernels' block partials.  Compiled by
// the host compiler; the kernels are in kernels.cu.
#include <Python.h>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <type_traits>

#include "glue/op_glue.h"
#include "cuda/kernels.h"

// An empty Python module: importing infodrop._C_cuda loads the library, whose static
// initialisers register the CUDA kernels.
extern "C" PyObject* PyInit__C_cuda(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

namespace infodrop {
namespace cuda {
namespace {

using at::Tensor;

void check_on_device_of(const Tensor& t, const Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), "infodrop (cuda): ", name, " must be on ", x.device(),
              " like x, got ", t.device());
}

// A seed on the GPU is read by the kernel (no synchronisation); a CPU seed is read here.
SeedRef seed_ref(const Tensor& seed, const Tensor& x) {
  if (seed.is_cpu()) return {nullptr, static_cast<uint64_t>(cpu_scalar<int64_t>(seed))};
  check_on_device_of(seed, x, "seed");
  return {seed.const_data_ptr<int64_t>(), 0};
}

// Whether every tensor starts on a multiple of `bytes` (the kernels' whole-step accesses).
bool aligned_to(uintptr_t bytes, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    if (reinterpret_cast<uintptr_t>(t->const_data_ptr()) % bytes != 0) return false;
  return true;
}

uintptr_t step_bytes(const Tensor& x) {
  const int element_bytes = static_cast<int>(x.element_size());
  return static_cast<uintptr_t>(elements_per_step(element_bytes) * element_bytes);
}

Shape shape_of(const Tensor& x) {
  const int64_t samples = x.size(0);
  return {samples, samples == 0 ? 0 : x.numel() / samples};
}

// The channels-last walk of x (walker.h's LastShape): pairs of channels where the pointers are
// aligned to two elements.
LastShape last_shape_of(const Tensor& x, const SampleLayout& layout,
                        std::initializer_list<const Tensor*> tensors) {
  TORCH_CHECK(layout.channels < (int64_t{1} << 31),
              "infodrop (cuda): channels_last x must have fewer than 2^31 channels, got ",
              layout.channels);
  const int element_bytes = static_cast<int>(x.element_size());
  return last_shape(x.size(0), layout.channels, layout.positions, element_bytes,
                    aligned_to(2 * static_cast<uintptr_t>(element_bytes), tensors));
}

template <class S>
Params<S> make_params(const OpOptions& o) {
  Params<S> p;  // mu and sigma: set by the kernel from device memory
  p.set_options(S(o.max_alpha), S(o.alpha_min), o.prior, o.mask_inactive, o.unit_mean,
                o.apply_noise);
  return p;
}

template <class scalar_t>
using Compute = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// logit_bias where the kernels add it (the channels-last walk, whose tiles know their channels;
// not for double: kernels.h), as their compute dtype; else alpha_logit gets it added before the
// kernels read it (op_glue.h), and the kernels see no bias.
struct LogitBias {
  Tensor kernel_bias;  // undefined where none is handed to the kernels
  template <class S>
  const S* ptr() const { return kernel_bias.defined() ? kernel_bias.const_data_ptr<S>() : nullptr; }
};

LogitBias place_logit_bias(const std::optional<Tensor>& bias, const Tensor& x,
                           bool channels_last, Tensor& logit) {
  check_logit_bias(bias, x);
  if (!bias) return {};
  if (channels_last && last_kernels_add_bias(static_cast<int>(x.element_size())))
    return {as_dtype(*bias, kl_dtype(x.scalar_type())).contiguous()};
  logit = logit_with_bias(logit, bias);  // in the walked logit's layout (empty_like)
  return {};
}

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& x, const Tensor& alpha_logit,
                                        const Tensor& seed, int64_t offset, const Tensor& mu,
                                        const Tensor& sigma, c10::string_view prior,
                                        double max_alpha, double alpha_min, bool mask_inactive,
                                        bool unit_mean, bool apply_noise,
                                        const std::optional<Tensor>& logit_bias) {
  const OpOptions o = check_op_inputs(x, alpha_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  TORCH_CHECK(x.is_cuda(), "infodrop (cuda): x must be a CUDA tensor, got ", x.device());
  check_on_device_of(mu, x, "mu");
  check_on_device_of(sigma, x, "sigma");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::ScalarType acc = kl_dtype(x.scalar_type());
  ForwardIO io = forward_io(x, alpha_logit, ChannelsLast::InPlace);
  const bool last = io.layout.channels_last;
  const LogitBias bias = place_logit_bias(logit_bias, x, last, io.logit);
  const Shape shape = shape_of(x);
  if (x.numel() == 0) return {io.z.result, at::zeros({shape.samples}, x.options().dtype(acc))};
  const LastShape tiles = last ? last_shape_of(x, io.layout, {&io.x, &io.logit, &io.z.work})
                               : LastShape{};
  const int blocks = last ? blocks_per_sample(tiles)
                          : blocks_per_sample(shape, static_cast<int>(x.element_size()));
  Tensor partials = at::empty({shape.samples, blocks}, x.options().dtype(acc));
  const Tensor mu_c = mu.to(acc).contiguous(), sigma_c = sigma.to(acc).contiguous();
  const SeedRef seed_arg = seed_ref(seed, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_forward_cuda", [&] {
    using S = Compute<scalar_t>;
    if (last) {
      launch_forward_last<scalar_t, S>(
          io.x.const_data_ptr<scalar_t>(), io.logit.const_data_ptr<scalar_t>(),
          io.z.work.data_ptr<scalar_t>(), partials.data_ptr<S>(), tiles, blocks, seed_arg,
          static_cast<uint64_t>(offset), make_params<S>(o), mu_c.const_data_ptr<S>(),
          sigma_c.const_data_ptr<S>(), bias.ptr<S>(), stream);
      return;
    }
    launch_forward<scalar_t, S>(
        io.x.const_data_ptr<scalar_t>(), io.logit.const_data_ptr<scalar_t>(),
        io.z.work.data_ptr<scalar_t>(), partials.data_ptr<S>(), shape, blocks,
        aligned_to(step_bytes(x), {&io.x, &io.logit, &io.z.work}),
        seed_arg, static_cast<uint64_t>(offset), make_params<S>(o), mu_c.const_data_ptr<S>(),
        sigma_c.const_data_ptr<S>(), stream);
  });
  return {io.z.finish(), partials.sum(1)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cuda(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& x, const Tensor& alpha_logit,
    const Tensor& seed, int64_t offset, const Tensor& mu, const Tensor& sigma,
    c10::string_view prior, double max_alpha, double alpha_min, bool mask_inactive,
    bool unit_mean, bool apply_noise, const std::optional<Tensor>& logit_bias) {
  const OpOptions o = check_op_inputs(x, alpha_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  check_grads(grad_z, grad_kl, x);
  TORCH_CHECK(x.is_cuda(), "infodrop (cuda): x must be a CUDA tensor, got ", x.device());
  for (const auto& [t, name] : {std::pair{&mu, "mu"}, {&sigma, "sigma"}, {&grad_z, "grad_z"},
                                {&grad_kl, "grad_kl"}})
    check_on_device_of(*t, x, name);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::ScalarType acc = kl_dtype(x.scalar_type());
  BackwardIO io = backward_io(grad_z, grad_kl, x, alpha_logit, ChannelsLast::InPlace);
  const LogitBias bias = place_logit_bias(logit_bias, x, io.layout.channels_last, io.logit);
  const Shape shape = shape_of(x);
  if (x.numel() == 0)
    return {io.grad_x.result, io.grad_logit.result, at::zeros_like(mu), at::zeros_like(sigma)};
  // Only the log-normal prior depends on mu and sigma.
  const bool prior_grads = o.prior == Prior::LogNormal;
  const bool last = io.layout.channels_last;
  const LastShape tiles =
      last ? last_shape_of(x, io.layout,
                           {&io.grad_z, &io.x, &io.logit, &io.grad_x.work, &io.grad_logit.work})
           : LastShape{};
  const int blocks = last ? blocks_per_sample(tiles)
                          : blocks_per_sample(shape, static_cast<int>(x.element_size()));
  Tensor prior_partials;
  if (prior_grads) prior_partials = at::empty({shape.samples, blocks, 2}, x.options().dtype(acc));
  const Tensor mu_c = mu.to(acc).contiguous(), sigma_c = sigma.to(acc).contiguous();
  const SeedRef seed_arg = seed_ref(seed, x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_backward_cuda", [&] {
    using S = Compute<scalar_t>;
    if (last) {
      launch_backward_last<scalar_t, S>(
          io.grad_z.const_data_ptr<scalar_t>(), io.grad_kl.const_data_ptr<S>(),
          io.x.const_data_ptr<scalar_t>(), io.logit.const_data_ptr<scalar_t>(),
          io.grad_x.work.data_ptr<scalar_t>(), io.grad_logit.work.data_ptr<scalar_t>(),
          prior_grads ? prior_partials.data_ptr<S>() : nullptr, tiles, blocks, seed_arg,
          static_cast<uint64_t>(offset), make_params<S>(o), mu_c.const_data_ptr<S>(),
          sigma_c.const_data_ptr<S>(), bias.ptr<S>(), stream);
      return;
    }
    launch_backward<scalar_t, S>(
        io.grad_z.const_data_ptr<scalar_t>(), io.grad_kl.const_data_ptr<S>(),
        io.x.const_data_ptr<scalar_t>(), io.logit.const_data_ptr<scalar_t>(),
        io.grad_x.work.data_ptr<scalar_t>(), io.grad_logit.work.data_ptr<scalar_t>(),
        prior_grads ? prior_partials.data_ptr<S>() : nullptr, shape, blocks,
        aligned_to(step_bytes(x),
                   {&io.grad_z, &io.x, &io.logit, &io.grad_x.work, &io.grad_logit.work}),
        seed_arg,
        static_cast<uint64_t>(offset), make_params<S>(o), mu_c.const_data_ptr<S>(),
        sigma_c.const_data_ptr<S>(), stream);
  });
  const Tensor grad_x = io.grad_x.finish(), grad_logit = io.grad_logit.finish();
  if (!prior_grads) return {grad_x, grad_logit, at::zeros_like(mu), at::zeros_like(sigma)};
  // Each sum is a new tensor: the two outputs do not alias each other.
  const Tensor grad_mu = prior_partials.select(2, 0).sum().to(mu.scalar_type()).reshape(mu.sizes());
  const Tensor grad_sigma =
      prior_partials.select(2, 1).sum().to(sigma.scalar_type()).reshape(sigma.sizes());
  return {grad_x, grad_logit, grad_mu, grad_sigma};
}

void noise_cuda(const Tensor& out, const Tensor& seed, int64_t offset, int64_t start) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "infodrop.noise_: out must be a contiguous float32 tensor");
  check_seed(seed);
  TORCH_CHECK(out.is_cuda(), "infodrop (cuda): out must be a CUDA tensor, got ", out.device());
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  const bool aligned = static_cast<uint64_t>(start) % 4 == 0 && aligned_to(16, {&out});
  launch_noise(out.data_ptr<float>(), out.numel(), static_cast<uint64_t>(start), aligned,
               seed_ref(seed, out), static_cast<uint64_t>(offset),
               c10::cuda::getCurrentCUDAStream());
}

}  // namespace
}  // namespace cuda
}  // namespace infodrop

TORCH_LIBRARY_IMPL(infodrop, CUDA, m) {
  m.impl("information_dropout", &infodrop::cuda::forward_cuda);
  m.impl("information_dropout_backward", &infodrop::cuda::backward_cuda);
  m.impl("noise_", &infodrop::cuda::noise_cuda);
}
