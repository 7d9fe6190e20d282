// The CUDA kernels' choice of math per element, checked on the CPU (tests/test_device_range.py):
// a step or tile of V elements skips the per-element tests only where its one range test
// (device_in_range of the V logits) is true, and that must be exactly where every element's own
// test is, or an element would take the special-function path in one layout's grouping and the
// IEEE path in the other's (csrc/infodrop/elementwise.h, "the elements of a CUDA thread's
// step").  Prints "ok <arrays checked>" or "FAIL <logits>".
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>

#include "infodrop/elementwise.h"

namespace {

// Logits at and around the bound, signed zeros, infinities, NaN, ordinary values.
const float kValues[] = {0.0f, -0.0f, 1.5f, -79.5f, 80.0f, -80.0f,
                         std::nextafter(80.0f, 100.0f), -std::nextafter(80.0f, 100.0f), 1e30f,
                         std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::quiet_NaN()};
constexpr int kCount = sizeof(kValues) / sizeof(kValues[0]);

template <int V>
bool agrees(const float (&logit)[V]) {
  bool every = true;
  for (int k = 0; k < V; ++k) {
    const bool own = infodrop::device_in_range(logit[k]);
    // the per-element rule itself: |logit| <= 80, NaN in range
    if (own != (std::isnan(logit[k]) || std::fabs(logit[k]) <= 80.0f)) return false;
    every = every && own;
  }
  return infodrop::device_in_range(logit) == every;
}

template <int V>
void report(const float (&logit)[V]) {
  std::cout << "FAIL";
  for (float v : logit) std::cout << " " << v;
  std::cout << "\n";
}

}  // namespace

int main() {
  int64_t checked = 0;
  // V = 4 (a float step, a single-channel tile): every combination of the values
  for (int64_t code = 0; code < int64_t{kCount} * kCount * kCount * kCount; ++code) {
    float logit[4];
    int64_t rest = code;
    for (float& v : logit) v = kValues[rest % kCount], rest /= kCount;
    if (!agrees(logit)) return report(logit), 1;
    ++checked;
  }
  // V = 8 (a 16-bit step, a pair of channels): one or two values from the list among in-range
  // ones, at every pair of positions
  for (int i = 0; i < 8; ++i)
    for (int j = i; j < 8; ++j)
      for (int a = 0; a < kCount; ++a)
        for (int b = 0; b < kCount; ++b) {
          float logit[8] = {3.0f, -2.0f, 0.5f, 79.0f, -79.0f, 0.0f, 10.0f, -10.0f};
          logit[i] = kValues[a];
          logit[j] = kValues[b];
          if (!agrees(logit)) return report(logit), 1;
          ++checked;
        }
  std::cout << "ok " << checked << "\n";
  return 0;
}
