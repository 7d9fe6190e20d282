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

// A sample (C channels of S positions; C = 1 below three dimensions) is cut into runs of
// logically consecutive elements, the unit of the KL reduction: a tile of at most kRun
// positions of one channel where S >= kRun, else a group of kRun / S whole channels.  Each
// run's partial sum is taken in the kernel's order and the runs' sums are added in logical
// order, so the KL depends neither on the number of threads nor on the memory format: a run
// lies in one channel or covers whole ones, so a channels-last run is a rectangle of the
// sample's S x C matrix that chunk_arrays.h gathers, and a channels-first one is contiguous.
// With channels-last arrays a task (the unit of parallel work) is the runs of one tile (or of
// all positions) in about kTaskElements / kRun = 32 or more consecutive channels: a rectangle
// whose rows hold whole cache lines, gathered into buffers that stay in L2.
constexpr int64_t kRun = 1024;
constexpr int64_t kTaskElements = 32768;        // elements per channels-last task
constexpr int64_t kMinElementsPerTask = 32768;  // at::parallel_for's grain, in elements

struct Work {
  int64_t samples, per_sample, C, S;
  bool tiles;                 // runs are tiles of one channel, else groups of whole channels
  int64_t rows;               // positions per run (the last tile may be shorter)
  int64_t run_channels;       // channels per run: 1, or kRun / S
  int64_t tiles_per_channel;  // position tiles (1 for whole channels)
  int64_t task_channels;      // channels per task, a multiple of run_channels
  int64_t groups;             // channel groups per tile

  int64_t runs_per_sample() const {
    if (per_sample == 0) return 0;
    return tiles ? C * tiles_per_channel : (C + run_channels - 1) / run_channels;
  }
  int64_t runs() const { return samples * runs_per_sample(); }
  int64_t tasks() const { return per_sample == 0 ? 0 : samples * tiles_per_channel * groups; }
  // Channel rows of a task's buffer lie pitch elements apart: a run's length, padded by a cache
  // line where runs are single channels, because 1024 float32 positions are 4 KiB, and rows 4 KiB
  // apart share one L1 set (gathering (2, 256, 56, 56) float32 took 7.5 ms unpadded, 2.4 ms
  // padded; a contiguous pass 0.9 ms).  A run of several whole channels must stay contiguous.
  int64_t pitch() const { return run_channels == 1 ? rows + 32 : rows; }  // 32: a line or more
  int64_t task_elements() const { return task_channels * pitch(); }
  int64_t grain() const {
    return std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, task_elements()));
  }
};

Work plan(const Tensor& x) {
  Work w{};
  w.samples = x.size(0);
  w.per_sample = w.samples == 0 ? 0 : x.numel() / w.samples;
  w.C = x.dim() >= 3 ? std::max<int64_t>(x.size(1), 1) : 1;
  w.S = w.per_sample / w.C;
  w.tiles = w.S >= kRun;
  w.rows = w.tiles ? kRun : w.S;
  w.run_channels = w.tiles ? 1 : kRun / std::max<int64_t>(w.S, 1);
  w.tiles_per_channel = w.tiles ? (w.S + kRun - 1) / kRun : 1;
  const int64_t runs_per_task = std::max<int64_t>(
      1, kTaskElements / std::max<int64_t>(1, w.run_channels * w.rows));
  w.task_channels = std::min(w.C, runs_per_task * w.run_channels);
  w.groups = (w.C + w.task_channels - 1) / w.task_channels;
  return w;
}

// One array a kernel reads or writes: its data, whether its samples are channels-last, and
// whether the kernel writes it.
template <class T>
struct Walked {
  T* data;
  bool channels_last, output;
};

template <class T>
Walked<T> walked(const Tensor& t, const SampleLayout& layout, bool output) {
  return {reinterpret_cast<T*>(t.data_ptr()), layout.channels_last, output};
}

// Runs f(run, sample, index0, n, pointers) for every run, in parallel: run numbers the partial
// sums (in logical order within each sample), index0 is the run's first logical index, and
// pointers[i] its n elements of array i in logical order: in the array itself where its samples
// are channels-first, else in a buffer gathered before f (inputs) and scattered after it
// (outputs).  Without channels-last arrays the runs are taken in logical order, so that memory
// is walked from start to end: taking the runs of a tile across channels, as rectangles do,
// made a contiguous (8, 256, 56, 56) forward and backward 1.4x slower.
template <class T, size_t N, class F>
void for_each_run(const Work& w, const std::array<Walked<T>, N>& arrays, const F& f) {
  const bool gathers = std::any_of(arrays.begin(), arrays.end(),
                                   [](const Walked<T>& a) { return a.channels_last; });
  if (!gathers) {
    const int64_t per_run = std::min(w.per_sample, w.run_channels * w.rows);
    const int64_t grain = std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_run));
    at::parallel_for(0, w.runs(), grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t sample = r / w.runs_per_sample(), run = r % w.runs_per_sample();
        const int64_t c = w.tiles ? run / w.tiles_per_channel : run * w.run_channels;
        const int64_t s0 = w.tiles ? run % w.tiles_per_channel * w.rows : 0;
        const int64_t start = c * w.S + s0;
        const int64_t n = w.tiles ? std::min(w.S - s0, w.rows)
                                  : (std::min(w.C, c + w.run_channels) - c) * w.S;
        std::array<T*, N> pointers;
        for (size_t i = 0; i < N; ++i) pointers[i] = arrays[i].data + sample * w.per_sample + start;
        f(r, sample, sample * w.per_sample + start, n, pointers);
      }
    });
    return;
  }
  at::parallel_for(0, w.tasks(), w.grain(), [&](int64_t begin, int64_t end) {
    std::vector<T> buffers(N * w.task_elements());
    for (int64_t t = begin; t < end; ++t) {
      const int64_t sample = t / (w.tiles_per_channel * w.groups);
      const int64_t tile = t / w.groups % w.tiles_per_channel;
      const int64_t c0 = t % w.groups * w.task_channels, c1 = std::min(w.C, c0 + w.task_channels);
      const int64_t s0 = tile * w.rows, s1 = std::min(w.S, s0 + w.rows);
      std::array<T*, N> samples;
      for (size_t i = 0; i < N; ++i) {
        samples[i] = arrays[i].data + sample * w.per_sample;
        if (arrays[i].channels_last && !arrays[i].output)
          gather(samples[i], w.C, s0, s1, c0, c1, buffers.data() + i * w.task_elements(),
                 w.pitch());
      }
      for (int64_t c = c0; c < c1; c += w.run_channels) {
        const int64_t start = c * w.S + s0;  // within the sample
        const int64_t n = (std::min(c + w.run_channels, c1) - c - 1) * w.S + s1 - s0;
        std::array<T*, N> pointers;
        for (size_t i = 0; i < N; ++i)
          pointers[i] = arrays[i].channels_last
                            ? buffers.data() + i * w.task_elements() + (c - c0) * w.pitch()
                            : samples[i] + start;
        const int64_t run = w.tiles ? c * w.tiles_per_channel + tile : c / w.run_channels;
        f(sample * w.runs_per_sample() + run, sample, sample * w.per_sample + start, n, pointers);
      }
      for (size_t i = 0; i < N; ++i)
        if (arrays[i].channels_last && arrays[i].output)
          scatter(buffers.data() + i * w.task_elements(), w.pitch(), w.C, s0, s1, c0, c1,
                  samples[i]);
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

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& x, const Tensor& raw_logit,
                                       const Tensor& seed, int64_t offset, const Tensor& mu,
                                       const Tensor& sigma, c10::string_view prior,
                                       double max_alpha, double alpha_min, bool mask_inactive,
                                       bool unit_mean, bool apply_noise,
                                       const std::optional<Tensor>& logit_bias) {
  const OpOptions o = check_op_inputs(x, raw_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  for (const auto& [t, name] : {std::pair{&x, "x"}, {&seed, "seed"}, {&mu, "mu"}, {&sigma, "sigma"}})
    check_cpu(*t, name);
  check_logit_bias(logit_bias, x);
  const Tensor alpha_logit = logit_with_bias(raw_logit, logit_bias);
  // Each array is walked in its own layout (x channels-last and alpha_logit contiguous, say):
  // only a layout the kernels cannot walk is copied.
  const WalkedX wx = walked_x(x, ChannelsLast::InPlace), wl = walked_x(alpha_logit, ChannelsLast::InPlace);
  KernelOutput z(x, wx.x);
  Tensor kl = at::empty({x.size(0)}, x.options().dtype(kl_dtype(x.scalar_type())));
  const Work work = plan(x);
  const StreamKey key(static_cast<uint64_t>(cpu_scalar<int64_t>(seed)), static_cast<uint64_t>(offset));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "infodrop_forward", [&] {
    using T = typename Storage<scalar_t>::type;
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const auto segment = segments().of<T>().forward;
    const Params<S> p = make_params<S>(o, mu, sigma);
    const std::array<Walked<T>, 3> arrays{walked<T>(wx.x, wx.layout, false),
                                          walked<T>(wl.x, wl.layout, false),
                                          walked<T>(z.work, wx.layout, true)};
    std::vector<S> partial(work.runs());
    for_each_run(work, arrays, [&](int64_t run, int64_t, int64_t start, int64_t n, const auto& a) {
      segment(a[0], a[1], a[2], n, static_cast<uint64_t>(start), key, p, &partial[run]);
    });
    S* klp = kl.data_ptr<S>();
    for (int64_t b = 0; b < x.size(0); ++b) {
      S total = 0;
      for (int64_t r = 0; r < work.runs_per_sample(); ++r)
        total += partial[b * work.runs_per_sample() + r];
      klp[b] = total;
    }
  });
  return {z.finish(), kl};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_cpu(
    const Tensor& grad_z, const Tensor& grad_kl, const Tensor& x, const Tensor& raw_logit,
    const Tensor& seed, int64_t offset, const Tensor& mu, const Tensor& sigma,
    c10::string_view prior, double max_alpha, double alpha_min, bool mask_inactive,
    bool unit_mean, bool apply_noise, const std::optional<Tensor>& logit_bias) {
  const OpOptions o = check_op_inputs(x, raw_logit, seed, mu, sigma, prior, max_alpha,
                                      alpha_min, mask_inactive, unit_mean, apply_noise);
  check_grads(grad_z, grad_kl, x);
  for (const auto& [t, name] : {std::pair{&x, "x"}, {&seed, "seed"}, {&mu, "mu"}, {&sigma, "sigma"},
                                {&grad_z, "grad_z"}, {&grad_kl, "grad_kl"}})
    check_cpu(*t, name);
  check_logit_bias(logit_bias, x);
  const Tensor alpha_logit = logit_with_bias(raw_logit, logit_bias);
  // Each array in its own layout, as in the forward.
  const WalkedX wg = walked_x(as_dtype(grad_z, x.scalar_type()), ChannelsLast::InPlace),
                wx = walked_x(x, ChannelsLast::InPlace),
                wl = walked_x(alpha_logit, ChannelsLast::InPlace);
  const Tensor gkl = as_dtype(grad_kl, kl_dtype(x.scalar_type())).contiguous();
  KernelOutput grad_x(x, wx.x), grad_logit(alpha_logit, wl.x);
  const Work work = plan(x);
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
    std::vector<S> dmu(work.runs()), dsigma(work.runs());
    for_each_run(work, arrays, [&](int64_t run, int64_t sample, int64_t start, int64_t n,
                                   const auto& a) {
      segment(a[0], gklp[sample], a[1], a[2], a[3], a[4], n, static_cast<uint64_t>(start), key,
              p, &dmu[run], &dsigma[run]);
    });
    // d loss / d mu = sum over samples of grad_kl[b] * (sum over b's elements of d kl / d mu)
    for (int64_t t = 0; t < work.runs(); ++t) {
      const double weight = gklp[t / work.runs_per_sample()];
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
  at::parallel_for(0, out.numel(), kMinElementsPerTask, [&](int64_t begin, int64_t end) {
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
