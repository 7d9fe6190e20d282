// CPU implementations of the infodrop ops: argument checks, the split of the work into
// segments for at::parallel_for, the per-sample reductions, and the choice of instruction set.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "glue/op_glue.h"
#include "cpu/segments.h"

namespace infodrop {
namespace cpu {
namespace {

using at::Tensor;

static_assert(sizeof(Half16) == sizeof(c10::Half) && sizeof(BFloat16) == sizeof(c10::BFloat16),
              "half types must be bit-compatible with PyTorch's");

template <class scalar_t>
struct Storage {
  using type = scalar_t;
};
template <>
struct Storage<c10::Half> {
  using type = Half16;
};
template <>
struct Storage<c10::BFloat16> {
  using type = BFloat16;
};

// The fastest kernels this CPU runs; INFODROP_CPU_ISA=avx512|avx2|baseline picks one instead
// (tests run every variant on a machine that has them all).
Segments select_segments() {
  const char* forced = std::getenv("INFODROP_CPU_ISA");
  const std::string want = forced ? forced : "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
#else
  const bool avx512 = false, avx2 = false;
#endif
  TORCH_CHECK(want.empty() || want == "avx512" || want == "avx2" || want == "baseline",
              "INFODROP_CPU_ISA must be avx512, avx2 or baseline, got '", want, "'");
  TORCH_CHECK(want != "avx512" || avx512, "INFODROP_CPU_ISA=avx512 but this CPU lacks AVX-512");
  TORCH_CHECK(want != "avx2" || avx2, "INFODROP_CPU_ISA=avx2 but this CPU lacks AVX2/FMA/F16C");
  if (want == "baseline") return baseline_segments();
  if (avx512 && want != "avx2") return avx512_segments();
  if (avx2) return avx2_segments();
  return baseline_segments();
}

const Segments& segments() {
  static const Segments chosen = select_segments();
  return chosen;
}

// Samples are cut into chunks of at most kChunk elements: the unit of parallel work and of the
// KL reduction.  Partial sums are added in a fixed order, so results do not depend on the
// number of threads.
constexpr int64_t kChunk = 16384;
constexpr int64_t kMinElementsPerTask = 32768;

struct Work {
  int64_t samples, per_sample, chunks_per_sample;
  int64_t tasks() const { return samples * chunks_per_sample; }
  int64_t grain() const {
    const int64_t per_task = std::min(per_sample, kChunk);
    return std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_task));
  }
  // The contiguous elements [start, start + n) of task t, which belong to sample t / chunks.
  void task(int64_t t, int64_t& sample, int64_t& start, int64_t& n) const {
    sample = t / chunks_per_sample;
    const int64_t within = (t % chunks_per_sample) * kChunk;
    start = sample * per_sample + within;
    n = std::min(kChunk, per_sample - within);
  }
};

// Runs f(task, sample, start, n) for every task, in parallel.
template <class F>
void for_each_task(const Work& work, const F& f) {
  at::parallel_for(0, work.tasks(), work.grain(), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t sample, start, n;
      work.task(t, sample, start, n);
      f(t, sample, start, n);
    }
  });
}

Work plan(const Tensor& x) {
  const int64_t samples = x.size(0);
  const int64_t per_sample = samples == 0 ? 0 : x.numel() / samples;
  return {samples, per_sample, (per_sample + kChunk - 1) / kChunk};
}

template <class S>
Params<S> make_params(const OpOptions& o, const Tensor& mu, const Tensor& sigma) {
  Params<S> p;
  p.set_options(S(o.max_alpha), S(o.alpha_min), o.prior, o.mask_inactive, o.unit_mean,
                o.apply_noise);
  p.set_prior(S(cpu_scalar<double>(mu)), S(cpu_scalar<double>(sigma)));
  return p;
}

void check_cpu(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "infodrop (cpu): ", name, " must be on the CPU, got ",
              t.device());
}

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& x, const Tensor& alpha_logit,
                                       const Tensor& seed, int64_t offset, const Tensor& mu,
                                       const Tensor& sigma, c10::string_view prior,
                                       double max_alpha, double alpha_min, bool mask_inactive,
                                       bool unit_mean, bool apply_noise) {
  const OpOptions o = check_op_inputs(x, alpha_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  for (const auto& [t, name] : {std::pair{&x, "x"}, {&seed, "seed"}, {&mu, "mu"}, {&sigma, "sigma"}})
    check_cpu(*t, name);
  ForwardIO io = forward_io(x, alpha_logit, ChannelsLast::Copied);
  Tensor kl = at::empty({x.size(0)}, x.options().dtype(kl_dtype(x.scalar_type())));
  const Work work = plan(x);
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_forward", [&] {
    using T = typename Storage<scalar_t>::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const auto segment = segments().of<T>().forward;
    const Params<S> p = make_params<S>(o, mu, sigma);
    const T* xp = reinterpret_cast<const T*>(io.x.data_ptr<scalar_t>());
    const T* lp = reinterpret_cast<const T*>(io.logit.data_ptr<scalar_t>());
    T* zp = reinterpret_cast<T*>(io.z.work.data_ptr<scalar_t>());
    std::vector<S> partial(work.tasks());
    for_each_task(work, [&](int64_t t, int64_t, int64_t start, int64_t n) {
      segment(xp + start, lp + start, zp + start, n, static_cast<uint64_t>(start), key, p, &partial[t]);
    });
    S* klp = kl.data_ptr<S>();
    for (int64_t b = 0; b < work.samples; ++b) {
      S total = 0;
      for (int64_t c = 0; c < work.chunks_per_sample; ++c) total += partial[b * work.chunks_per_sample + c];
      klp[b] = total;
    }
  });
  return {io.z.finish(), kl};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cpu(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& x, const Tensor& alpha_logit,
    const Tensor& seed, int64_t offset, const Tensor& mu, const Tensor& sigma,
    c10::string_view prior, double max_alpha, double alpha_min, bool mask_inactive,
    bool unit_mean, bool apply_noise) {
  const OpOptions o = check_op_inputs(x, alpha_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  check_grads(grad_z, grad_kl, x);
  for (const auto& [t, name] : {std::pair{&x, "x"}, {&seed, "seed"}, {&mu, "mu"}, {&sigma, "sigma"},
                                {&grad_z, "grad_z"}, {&grad_kl, "grad_kl"}})
    check_cpu(*t, name);
  BackwardIO io = backward_io(grad_z, grad_kl, x, alpha_logit, ChannelsLast::Copied);
  const Work work = plan(x);
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));
  double grad_mu = 0, grad_sigma = 0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_backward", [&] {
    using T = typename Storage<scalar_t>::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const auto segment = segments().of<T>().backward;
    const Params<S> p = make_params<S>(o, mu, sigma);
    const T* gzp = reinterpret_cast<const T*>(io.grad_z.data_ptr<scalar_t>());
    const T* xp = reinterpret_cast<const T*>(io.x.data_ptr<scalar_t>());
    const T* lp = reinterpret_cast<const T*>(io.logit.data_ptr<scalar_t>());
    T* gxp = reinterpret_cast<T*>(io.grad_x.work.data_ptr<scalar_t>());
    T* glp = reinterpret_cast<T*>(io.grad_logit.work.data_ptr<scalar_t>());
    const S* gklp = io.grad_kl.data_ptr<S>();
    std::vector<S> dmu(work.tasks()), dsigma(work.tasks());
    for_each_task(work, [&](int64_t t, int64_t sample, int64_t start, int64_t n) {
      segment(gzp + start, gklp[sample], xp + start, lp + start, gxp + start, glp + start, n,
              static_cast<uint64_t>(start), key, p, &dmu[t], &dsigma[t]);
    });
    // d loss / d mu = sum over samples of grad_kl[b] * (sum over b's elements of d kl / d mu)
    for (int64_t t = 0; t < work.tasks(); ++t) {
      const double weight = gklp[t / work.chunks_per_sample];
      grad_mu += weight * dmu[t];
      grad_sigma += weight * dsigma[t];
    }
  });
  return {io.grad_x.finish(), io.grad_logit.finish(), at::full_like(mu, grad_mu),
          at::full_like(sigma, grad_sigma)};
}

void noise_cpu(const Tensor& out, const Tensor& seed, int64_t offset, int64_t start) {
  TORCH_CHECK(out.scalar_type() == at::kFloat && out.is_contiguous(),
              "infodrop.noise_: out must be a contiguous float32 tensor");
  check_seed(seed);
  check_cpu(out, "out");
  check_cpu(seed, "seed");
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));
  float* p = out.data_ptr<float>();
  const auto segment = segments().noise;
  at::parallel_for(0, out.numel(), kChunk, [&](int64_t begin, int64_t end) {
    segment(p + begin, end - begin, static_cast<uint64_t>(start) + static_cast<uint64_t>(begin), key);
  });
}

}  // namespace

// For tests and the check command: which instruction set the CPU kernels use.
std::string active_isa() { return segments().isa; }

}  // namespace cpu
}  // namespace infodrop

TORCH_LIBRARY_IMPL(infodrop, CPU, m) {
  m.impl("information_dropout", &infodrop::cpu::forward_cpu);
  m.impl("information_dropout_backward", &infodrop::cpu::backward_cpu);
  m.impl("noise_", &infodrop::cpu::noise_cpu);
}

TORCH_LIBRARY_FRAGMENT(infodrop, m) {
  m.def("cpu_isa() -> str", [] { return infodrop::cpu::active_isa(); });
}
