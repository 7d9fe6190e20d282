// The log-uniform KL of a CUDA step as one log of a product (csrc/infodrop/elementwise.h,
// minus_log_of_product), checked on the CPU (tests/test_kl_product.py): the kernels call it with
// DeviceMath, this harness with the CPU's IeeeMath, and the rule that picks one log of the
// product or a log per term is the same code.  Against -sum(log r) in double: random ratios
// whose product is normal, products that underflow to zero or to a subnormal (which the one
// log would get wrong: -log 0 = inf, or a subnormal's few bits), ones, NaN.  Prints "ok
// <arrays checked>" or "FAIL <case> <ratios>".
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>

#include "infodrop/elementwise.h"

namespace {

// Error bound of the step's KL: the product's V - 1 roundings (2^-21.2 absolute for V = 8) and
// the log's (relative, a few ulp of the result), with room.
bool close(double got, double want) {
  return std::fabs(got - want) <= std::ldexp(1.0, -20) + std::ldexp(std::fabs(want), -21);
}

template <int V>
bool check(const char* name, const float (&r)[V]) {
  infodrop::IeeeMath<float> math;
  const float got = infodrop::minus_log_of_product(math, r);
  double want = 0.0;
  for (float v : r) want -= std::log(static_cast<double>(v));
  const bool ok = std::isnan(want) ? std::isnan(got) : close(got, want);
  if (!ok) {
    std::cout << "FAIL " << name << " got " << got << " want " << want << ":";
    for (float v : r) std::cout << " " << v;
    std::cout << "\n";
  }
  return ok;
}

// V ratios r = m 2^-e, m uniform in [1, 2) / 2, e uniform in [0, max_exponent]
template <int V>
void draw(std::mt19937& gen, int max_exponent, float (&r)[V]) {
  std::uniform_real_distribution<float> mantissa(0.5f, 1.0f);
  std::uniform_int_distribution<int> exponent(0, max_exponent);
  for (float& v : r) v = std::ldexp(mantissa(gen), -exponent(gen));
}

template <int V>
int64_t run(std::mt19937& gen) {
  int64_t checked = 0;
  float r[V];
  // products that stay normal (one log), then ones that underflow (a log per term)
  for (int max_exponent : {0, 4, 14, 100 / V, 115}) {
    for (int i = 0; i < 20000; ++i) {
      draw(gen, max_exponent, r);
      if (!check("random", r)) return -1;
      ++checked;
    }
  }
  // a product just below the smallest normal float, of ratios each at least 2^-115 (as the
  // kernels' range keeps them, sigmoid(-80) = 2^-115.4): subnormal, 2..20 bits lost
  for (int bits = 2; bits <= 20; ++bits) {
    draw(gen, 0, r);
    float rest = 1.0f;
    for (int k = 2; k < V; ++k) rest *= r[k];
    r[0] = std::ldexp(1.37f, -63);  // r[0] r[1] rest = 1.37 2^(-126 - bits)
    r[1] = std::ldexp(1.0f, -63 - bits) / rest;
    if (!(r[1] >= 0x1p-115f) || !(r[0] * r[1] * rest < 0x1p-126f)) return -1;
    if (!check("subnormal", r)) return -1;
    ++checked;
  }
  for (float& v : r) v = 1.0f;
  if (!check("ones", r)) return -1;
  r[V / 2] = std::numeric_limits<float>::quiet_NaN();
  if (!check("nan", r)) return -1;
  return checked + 2;
}

}  // namespace

int main() {
  std::mt19937 gen(20261207);
  const int64_t four = run<4>(gen), eight = run<8>(gen);
  if (four < 0 || eight < 0) return 1;
  std::cout << "ok " << four + eight << "\n";
  return 0;
}
