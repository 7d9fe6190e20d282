// CPU implementations of the infodrop ops: argument checks, the split of the work into
// segments for at::parallel_for, the per-sample reductions, and the choice of instruction set.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "glue/op_glue.h"
#include "cpu/chunk_arrays.h"
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

// Samples are cut into chunks of at most kChunk elements: the unit of the KL reduction, whose
// partial sums are added in a fixed order, so results do not depend on the number of threads.
// A task (the unit of parallel work) is one chunk, or for channels-last arrays a few
// consecutive chunks gathered together (chunk_arrays.h), so that each gathered rectangle spans
// at least kGatherChannels channels where the buffers allow: a narrower one transposes element
// by element.
constexpr int64_t kChunk = 16384;
constexpr int64_t kMinElementsPerTask = 32768;
constexpr int64_t kGatherChannels = 16;
constexpr int64_t kMaxChunksPerTask = 4;  // 64K elements per buffer: five fit in L2 as float

struct Work {
  int64_t samples, per_sample, chunks_per_sample, chunks_per_task;
  int64_t tasks_per_sample() const {
    return (chunks_per_sample + chunks_per_task - 1) / chunks_per_task;
  }
  int64_t tasks() const { return samples * tasks_per_sample(); }
  int64_t chunks() const { return samples * chunks_per_sample; }
  int64_t grain() const {
    const int64_t per_task = std::min(per_sample, kChunk * chunks_per_task);
    return std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_task));
  }
};

// One array a kernel reads or writes: its data and the layout of its samples.
template <class T>
struct Walked {
  T* data;
  SampleLayout layout;
  bool output;
};

template <class T>
Walked<T> walked(const Tensor& t, const SampleLayout& layout, bool output) {
  return {reinterpret_cast<T*>(t.data_ptr()), layout, output};
}

Work plan(const Tensor& x, std::initializer_list<SampleLayout> layouts) {
  const int64_t samples = x.size(0);
  const int64_t per_sample = samples == 0 ? 0 : x.numel() / samples;
  const int64_t chunks = (per_sample + kChunk - 1) / kChunk;
  int64_t per_task = 1;
  for (const SampleLayout& l : layouts)
    if (l.channels_last)
      per_task = std::max(per_task, (kGatherChannels * l.positions + kChunk - 1) / kChunk);
  return {samples, per_sample, chunks, std::clamp<int64_t>(per_task, 1, kMaxChunksPerTask)};
}

// Runs f(chunk, index0, n, pointers) for every chunk, in parallel: chunk numbers the partial
// sums (sample * chunks_per_sample + chunk within the sample), index0 is the chunk's first
// logical index, and pointers[i] the chunk's n elements of array i in logical order: in the
// array itself where its samples are channels-first, else in a buffer gathered before f
// (inputs) and scattered after it (outputs).
template <class T, size_t N, class F>
void for_each_chunk(const Work& work, const std::array<Walked<T>, N>& arrays, const F& f) {
  const bool gathers = std::any_of(arrays.begin(), arrays.end(),
                                   [](const Walked<T>& a) { return a.layout.channels_last; });
  const int64_t per_task = work.chunks_per_task;
  at::parallel_for(0, work.tasks(), work.grain(), [&](int64_t begin, int64_t end) {
    std::vector<T> buffers(gathers ? N * per_task * kChunk : 0);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t sample = t / work.tasks_per_sample();
      const int64_t first = (t % work.tasks_per_sample()) * per_task;
      const int64_t last = std::min(first + per_task, work.chunks_per_sample);
      const int64_t j0 = first * kChunk, n = std::min(last * kChunk, work.per_sample) - j0;
      std::array<T*, N> base;
      for (size_t i = 0; i < N; ++i) {
        T* data = arrays[i].data + sample * work.per_sample;
        if (!arrays[i].layout.channels_last) {
          base[i] = data + j0;
        } else {
          base[i] = buffers.data() + i * per_task * kChunk;
          if (!arrays[i].output) gather(data, arrays[i].layout, j0, n, base[i]);
        }
      }
      for (int64_t c = first; c < last; ++c) {
        const int64_t within = (c - first) * kChunk;
        std::array<T*, N> pointers;
        for (size_t i = 0; i < N; ++i) pointers[i] = base[i] + within;
        f(sample * work.chunks_per_sample + c, sample * work.per_sample + c * kChunk,
          std::min(kChunk, work.per_sample - c * kChunk), pointers);
      }
      for (size_t i = 0; i < N; ++i)
        if (arrays[i].layout.channels_last && arrays[i].output)
          scatter(base[i], arrays[i].layout, j0, n, arrays[i].data + sample * work.per_sample);
    }
  });
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
  // Each array is walked in its own layout (x channels-last and alpha_logit contiguous, say):
  // only a layout the kernels cannot walk is copied.
  const WalkedX wx = walked_x(x, ChannelsLast::InPlace), wl = walked_x(alpha_logit, ChannelsLast::InPlace);
  KernelOutput z(x, wx.x);
  Tensor kl = at::empty({x.size(0)}, x.options().dtype(kl_dtype(x.scalar_type())));
  const Work work = plan(x, {wx.layout, wl.layout});
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_forward", [&] {
    using T = typename Storage<scalar_t>::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const auto segment = segments().of<T>().forward;
    const Params<S> p = make_params<S>(o, mu, sigma);
    const std::array<Walked<T>, 3> arrays{walked<T>(wx.x, wx.layout, false),
                                          walked<T>(wl.x, wl.layout, false),
                                          walked<T>(z.work, wx.layout, true)};
    std::vector<S> partial(work.chunks());
    for_each_chunk(work, arrays, [&](int64_t chunk, int64_t start, int64_t n, const auto& a) {
      segment(a[0], a[1], a[2], n, static_cast<uint64_t>(start), key, p, &partial[chunk]);
    });
    S* klp = kl.data_ptr<S>();
    for (int64_t b = 0; b < work.samples; ++b) {
      S total = 0;
      for (int64_t c = 0; c < work.chunks_per_sample; ++c) total += partial[b * work.chunks_per_sample + c];
      klp[b] = total;
    }
  });
  return {z.finish(), kl};
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
  // Each array in its own layout, as in the forward.
  const WalkedX wg = walked_x(as_dtype(grad_z, x.scalar_type()), ChannelsLast::InPlace),
                wx = walked_x(x, ChannelsLast::InPlace),
                wl = walked_x(alpha_logit, ChannelsLast::InPlace);
  const Tensor gkl = as_dtype(grad_kl, kl_dtype(x.scalar_type())).contiguous();
  KernelOutput grad_x(x, wx.x), grad_logit(alpha_logit, wl.x);
  const Work work = plan(x, {wg.layout, wx.layout, wl.layout});
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));
  double grad_mu = 0, grad_sigma = 0;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_backward", [&] {
    using T = typename Storage<scalar_t>::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const auto segment = segments().of<T>().backward;
    const Params<S> p = make_params<S>(o, mu, sigma);
    const std::array<Walked<T>, 5> arrays{walked<T>(wg.x, wg.layout, false),
                                          walked<T>(wx.x, wx.layout, false),
                                          walked<T>(wl.x, wl.layout, false),
                                          walked<T>(grad_x.work, wx.layout, true),
                                          walked<T>(grad_logit.work, wl.layout, true)};
    const S* gklp = gkl.data_ptr<S>();
    std::vector<S> dmu(work.chunks()), dsigma(work.chunks());
    for_each_chunk(work, arrays, [&](int64_t chunk, int64_t start, int64_t n, const auto& a) {
      segment(a[0], gklp[chunk / work.chunks_per_sample], a[1], a[2], a[3], a[4], n,
              static_cast<uint64_t>(start), key, p, &dmu[chunk], &dsigma[chunk]);
    });
    // d loss / d mu = sum over samples of grad_kl[b] * (sum over b's elements of d kl / d mu)
    for (int64_t t = 0; t < work.chunks(); ++t) {
      const double weight = gklp[t / work.chunks_per_sample];
      grad_mu += weight * dmu[t];
      grad_sigma += weight * dsigma[t];
    }
  });
  return {grad_x.finish(), grad_logit.finish(), at::full_like(mu, grad_mu),
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
