// libmsjson: the tensor data of large inference requests, read from the JSON text straight into the input buffer.
//
// Two calls, both plain C, both safe to run without Python's GIL (ctypes releases it):
//   msjson_scan  walks the request document (OIP v2 or TF Serving v1), finds the arrays of tensor data and
//                measures each (end, value count, nesting depth, a comma near its middle); everything else in
//                the document is left to the caller's JSON parser (orjson) with the arrays cut out.
//   msjson_read  parses one array into a numeric buffer, on two threads when asked and the array is flat.
// And one that is not about JSON, but shares the library (it is loaded anyway, and calling it releases the GIL):
//   msjson_quantize  float32 values -> an int8/uint8/int16 input tensor, in one pass (modelship.numerics.quantize's
//                arithmetic exactly, NaN included; see the function).
//
// Numbers are read as simdjson reads them (its parse_double: the same grammar checks, the same digit
// accumulation, compute_float_64 or its exact fallback), so every float64 is the correctly rounded value of its
// text, then cast to the input's type. Anything this library does not decode exactly as Modelship's checked path
// (orjson + numpy) would (strings, null, true/false, NaN/Infinity tokens, integers past 2^53 in float tensors,
// fractions or out-of-range integers in integer tensors, ragged or empty nesting, a wrong count, duplicate or
// escaped keys) makes it DECLINE (a negative return): the caller then decodes the request the checked way, which
// gives the answer or the error. No exception crosses the C boundary (built with -fno-exceptions; no allocation
// but the caller's buffers); only the msjson_* functions are exported (hidden visibility + a version script).
#include "simdjson.h"

#include <pthread.h>
#include <signal.h>

#include <cfloat>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MSJSON_API extern "C" __attribute__((visibility("default")))

namespace {

namespace numparse = simdjson::builtin::numberparsing;
using u8 = uint8_t;

constexpr int ABI = 2;
constexpr int DECLINE = -1;      // not something this library decodes exactly: use the checked path
constexpr int MAX_DEPTH = 32;    // the checked path's limit for nested tensors
constexpr int CHECKPOINTS = 1024;
#ifndef MSJSON_MIN_STRIDE
#define MSJSON_MIN_STRIDE 65536  // bytes between checkpoints at least (the fuzz build lowers it: splits in small bodies)
#endif

// ------------------------------------------------------------------------------------------------ spans

}  // namespace

// One array of tensor data found by msjson_scan (layout shared with modelship/serve/nativejson.py).
struct msjson_span {
  uint64_t start;        // offset of its '['
  uint64_t end;          // offset just past its ']'
  uint64_t count;        // values (exact when the nesting is regular, which msjson_read checks)
  uint64_t split;        // offset of a comma near its middle (flat arrays only; 0: none)
  uint64_t split_index;  // values before that comma
  uint64_t name_start;   // v1 named input: offset and length of the member name (raw, no escapes)
  uint64_t name_len;
  uint32_t depth;        // nesting depth (1: flat)
  uint32_t owner;        // v2: index in "inputs"; v1: 0 "instances", 1 "inputs" list, 2 "inputs" member
};

namespace {

inline bool is_ws(u8 c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
inline bool is_digit(u8 c) { return u8(c - '0') <= 9; }
inline const u8 *skip_ws(const u8 *p, const u8 *end) {
  while (p < end && is_ws(*p)) p++;
  return p;
}

// p after the opening quote -> just past the closing quote (nullptr: unterminated)
inline const u8 *skip_string(const u8 *p, const u8 *end) {
  for (;;) {
    const u8 *q = static_cast<const u8 *>(memchr(p, '"', size_t(end - p)));
    if (q == nullptr) return nullptr;
    size_t backslashes = 0;
    while (q - backslashes > p && q[-1 - ptrdiff_t(backslashes)] == '\\') backslashes++;
    if (backslashes % 2 == 0) return q + 1;
    p = q + 1;
  }
}

// Any JSON value starting at p (after whitespace) -> just past it. Not a validator: the caller's parser validates
// everything outside the tensor arrays; this only has to find where a value ends (strings and brackets).
const u8 *skip_value(const u8 *p, const u8 *end) {
  size_t depth = 0;  // (a body of 2^31 '[' must not overflow it)
  while (p < end) {
    u8 c = *p;
    if (c == '"') {
      p = skip_string(p + 1, end);
      if (p == nullptr) return nullptr;
      if (depth == 0) return p;
      continue;
    }
    if (c == '[' || c == '{') {
      depth++;
    } else if (c == ']' || c == '}') {
      if (depth == 0) return p;  // end of a scalar inside its container
      if (--depth == 0) return p + 1;
    } else if (depth == 0 && (c == ',' || is_ws(c))) {
      return p;  // end of a scalar
    }
    p++;
  }
  return depth == 0 ? p : nullptr;
}

// A string key at p (the opening quote) -> [k, k_end) its raw bytes, returns just past it; nullptr when it holds
// an escape (the caller declines: "d\u0061ta" is "data" to every JSON parser)
inline const u8 *read_key(const u8 *p, const u8 *end, const u8 *&k, const u8 *&k_end) {
  if (p >= end || *p != '"') return nullptr;
  k = p + 1;
  const u8 *q = static_cast<const u8 *>(memchr(k, '"', size_t(end - k)));
  if (q == nullptr || memchr(k, '\\', size_t(q - k)) != nullptr) return nullptr;
  k_end = q;
  return q + 1;
}

inline bool key_is(const u8 *k, const u8 *k_end, const char *word) {
  size_t n = strlen(word);
  return size_t(k_end - k) == n && memcmp(k, word, n) == 0;
}

// p at '[': measure a numeric array (numbers, commas, brackets, whitespace). Fills span start/end/count/depth and
// the split comma; returns just past the array, or nullptr to decline (strings or objects inside, too deep,
// unbalanced). Regular nesting is only checked by msjson_read; count is exact when it is regular: the commas,
// minus those that separate rows (a '[' after a comma), plus one per innermost row (a '[' before a value).
const u8 *measure_array(const u8 *buf, const u8 *p, const u8 *end, msjson_span &span) {
  const u8 *start = p;
  int depth = 0, max_depth = 0;
  uint64_t commas = 0, row_commas = 0, leaves = 0;
  // comma counts at checkpoints, to find a comma near the middle once the end is known
  size_t stride = size_t(end - p) / CHECKPOINTS + 1;
  stride = stride < MSJSON_MIN_STRIDE ? MSJSON_MIN_STRIDE : (stride + 15) & ~size_t(15);
  const u8 *cp_pos[CHECKPOINTS];
  uint64_t cp_commas[CHECKPOINTS];
  int cps = 0;
  // the next checkpoint's position, never past the body (a pointer beyond it is undefined even unused)
  auto after = [&](const u8 *q) { return size_t(end - q) > stride ? q + stride : end; };
  const u8 *next_cp = after(p);
  auto one = [&](const u8 *q) -> int {  // 1: array closed at q, 0: go on, -1: decline
    u8 c = *q;
    if (c == ',') {
      commas++;
    } else if (c == '[') {
      if (++depth > MAX_DEPTH) return -1;
      if (depth > max_depth) max_depth = depth;
      const u8 *b = q;
      while (b > start && is_ws(b[-1])) b--;
      if (b > start && b[-1] == ',') row_commas++;
      const u8 *a = skip_ws(q + 1, end);
      if (a < end && *a != '[') leaves++;
    } else if (c == ']') {
      if (--depth == 0) return 1;
    } else if (c == '"' || c == '{' || c == '}') {
      return -1;
    }
    return 0;
  };
#if defined(__SSE2__)
  // 64 bytes a step. '[' ']' '{' '}' all become 0x59 under & 0xD9 (so do 'Y' '_' 'y' DEL: checked one by one
  // with the rest of a step that has any); commas are summed per byte lane, folded before a lane can overflow
  const __m128i fold = _mm_set1_epi8(char(0xD9)), bracket = _mm_set1_epi8(0x59), quote = _mm_set1_epi8('"'),
                comma = _mm_set1_epi8(','), zero = _mm_setzero_si128();
  __m128i lanes = zero;
  int steps = 0;
  auto flush = [&] {
    __m128i sums = _mm_sad_epu8(lanes, zero);
    commas += uint64_t(_mm_cvtsi128_si32(sums)) + uint64_t(_mm_cvtsi128_si32(_mm_unpackhi_epi64(sums, sums)));
    lanes = zero;
    steps = 0;
  };
  while (end - p >= 64) {
    if (p >= next_cp && cps < CHECKPOINTS) {
      flush();
      cp_pos[cps] = p;
      cp_commas[cps++] = commas;
      next_cp = after(p);
    }
    __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 16));
    __m128i v2 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 32));
    __m128i v3 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 48));
    auto special = [&](__m128i v) {
      return _mm_or_si128(_mm_cmpeq_epi8(_mm_and_si128(v, fold), bracket), _mm_cmpeq_epi8(v, quote));
    };
    __m128i any = _mm_or_si128(_mm_or_si128(special(v0), special(v1)), _mm_or_si128(special(v2), special(v3)));
    if (_mm_movemask_epi8(any) == 0) {
      // each cmpeq lane is 0 or -1: subtracting counts
      lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v0, comma));
      lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v1, comma));
      lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v2, comma));
      lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v3, comma));
      if (++steps == 63) flush();  // 63 * 4 < 256
      p += 64;
      continue;
    }
    flush();
    for (int j = 0; j < 64; j++) {
      int r = one(p + j);
      if (r < 0) return nullptr;
      if (r > 0) {
        p += j;
        goto closed;
      }
    }
    p += 64;
  }
  flush();
#endif
  for (; p < end; p++) {
    if (p >= next_cp && cps < CHECKPOINTS) {
      cp_pos[cps] = p;
      cp_commas[cps++] = commas;
      next_cp = after(p);
    }
    int r = one(p);
    if (r < 0) return nullptr;
    if (r > 0) goto closed;
  }
  return nullptr;  // never closed
closed:
  span.start = uint64_t(start - buf);
  span.end = uint64_t(p + 1 - buf);
  span.depth = uint32_t(max_depth);
  {
    const u8 *first = skip_ws(start + 1, p);
    span.count = first == p ? 0 : commas - row_commas + leaves;
    // n values take n digits and n - 1 commas at least: a larger count is no array of numbers (a run of commas),
    // and the caller sizes its buffer by it
    if (span.count > uint64_t(p - start) / 2) return nullptr;
  }
  span.split = span.split_index = 0;
  if (max_depth == 1 && cps > 0) {
    // the checkpoint nearest the middle, then the first comma after it
    const u8 *mid = start + (p - start) / 2;
    int best = 0;
    for (int i = 1; i < cps; i++) {
      if ((cp_pos[i] > mid ? cp_pos[i] - mid : mid - cp_pos[i]) <
          (cp_pos[best] > mid ? cp_pos[best] - mid : mid - cp_pos[best]))
        best = i;
    }
    const u8 *c = static_cast<const u8 *>(memchr(cp_pos[best], ',', size_t(p - cp_pos[best])));
    if (c != nullptr) {
      span.split = uint64_t(c - buf);
      span.split_index = cp_commas[best] + 1;
    }
  }
  return p + 1;
}

struct Scan {
  const u8 *buf;
  const u8 *end;
  msjson_span *spans;
  size_t max, n = 0;

  // -1 decline, 0 not numeric (skipped), 1 recorded
  int array(const u8 *&p, uint32_t owner) {
    const u8 *first = skip_ws(p + 1, end);
    if (first >= end) return -1;
    if (*first == '{' || *first == '"' || *first == ']') {  // rows of named inputs, b64, strings, empty: not ours
      p = skip_value(p, end);
      return p == nullptr ? -1 : 0;
    }
    if (n >= max) return -1;
    msjson_span &s = spans[n];
    memset(&s, 0, sizeof s);
    p = measure_array(buf, p, end, s);
    if (p == nullptr) return -1;
    s.owner = owner;
    n++;
    return 1;
  }
};

// Members of an object at p ('{'): calls member(key, key_end, p) with p at the value (after whitespace), which
// must advance p past the value; returns just past '}' or nullptr.
template <typename F>
const u8 *object(const u8 *p, const u8 *end, F member) {
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') return p + 1;
  for (;;) {
    const u8 *k, *k_end;
    p = read_key(skip_ws(p, end), end, k, k_end);
    if (p == nullptr) return nullptr;
    p = skip_ws(p, end);
    if (p >= end || *p != ':') return nullptr;
    p = skip_ws(p + 1, end);
    if (p >= end || !member(k, k_end, p)) return nullptr;
    p = skip_ws(p, end);
    if (p >= end) return nullptr;
    if (*p == '}') return p + 1;
    if (*p != ',') return nullptr;
    p++;
  }
}

long scan_v2(Scan &s) {
  const u8 *end = s.end;
  const u8 *p = skip_ws(s.buf, end);
  if (p >= end || *p != '{') return 0;
  bool seen_inputs = false, declined = false;
  p = object(p, end, [&](const u8 *k, const u8 *k_end, const u8 *&v) {
    if (!key_is(k, k_end, "inputs")) return (v = skip_value(v, end)) != nullptr;
    if (seen_inputs) return !(declined = true);
    seen_inputs = true;
    if (*v != '[') return (v = skip_value(v, end)) != nullptr;
    v = skip_ws(v + 1, end);
    if (v < end && *v == ']') return ++v, true;
    for (uint32_t i = 0;; i++) {
      v = skip_ws(v, end);
      if (v >= end) return false;
      if (*v == '{') {
        bool seen_data = false;
        v = object(v, end, [&](const u8 *tk, const u8 *tk_end, const u8 *&tv) {
          if (!key_is(tk, tk_end, "data")) return (tv = skip_value(tv, end)) != nullptr;
          if (seen_data) return !(declined = true);
          seen_data = true;
          if (*tv != '[') return (tv = skip_value(tv, end)) != nullptr;
          int r = s.array(tv, i);
          return r >= 0 || !(declined = true);
        });
      } else {
        v = skip_value(v, end);
      }
      if (v == nullptr) return false;
      v = skip_ws(v, end);
      if (v >= end) return false;
      if (*v == ']') return ++v, true;
      if (*v != ',') return false;
      v++;
    }
  });
  if (declined || p == nullptr) return DECLINE;
  return long(s.n);
}

long scan_v1(Scan &s) {
  const u8 *end = s.end;
  const u8 *p = skip_ws(s.buf, end);
  if (p >= end || *p != '{') return 0;
  bool seen_instances = false, seen_inputs = false, declined = false;
  p = object(p, end, [&](const u8 *k, const u8 *k_end, const u8 *&v) {
    bool instances = key_is(k, k_end, "instances");
    if (!instances && !key_is(k, k_end, "inputs")) return (v = skip_value(v, end)) != nullptr;
    bool &seen = instances ? seen_instances : seen_inputs;
    if (seen) return !(declined = true);
    seen = true;
    if (*v == '[') return s.array(v, instances ? 0 : 1) >= 0 || !(declined = true);
    if (instances || *v != '{') return (v = skip_value(v, end)) != nullptr;
    size_t first = s.n;
    v = object(v, end, [&](const u8 *nk, const u8 *nk_end, const u8 *&nv) {
      for (size_t j = first; j < s.n; j++) {  // duplicate names: the last one wins in JSON parsers
        if (size_t(nk_end - nk) == s.spans[j].name_len && memcmp(nk, s.buf + s.spans[j].name_start, s.spans[j].name_len) == 0)
          return !(declined = true);
      }
      if (*nv != '[') return !(declined = true);  // a member that is not an array: the checked path decides
      int r = s.array(nv, 2);
      if (r <= 0) return !(declined = true);
      s.spans[s.n - 1].name_start = uint64_t(nk - s.buf);
      s.spans[s.n - 1].name_len = uint64_t(nk_end - nk);
      return true;
    });
    return v != nullptr;
  });
  if (declined || p == nullptr) return DECLINE;
  return long(s.n);
}

// ------------------------------------------------------------------------------------------------ numbers

// One JSON number token, lexed as simdjson's parse_double lexes it.
struct Token {
  const u8 *src;  // first digit (after the sign)
  uint64_t i;     // the digits as an integer (may wrap when overflow)
  int64_t exponent;
  bool negative, integer, overflow;
};

// p at the token -> just past it, or nullptr when it is not a JSON number
inline const u8 *lex(const u8 *p, const u8 *end, Token &t) {
  t.negative = p < end && *p == '-';
  p += t.negative;
  const u8 *src = t.src = p;
  uint64_t i = 0;
  while (p < end && is_digit(*p)) i = 10 * i + u8(*p++ - '0');
  if (p == src || (*src == '0' && p != src + 1)) return nullptr;  // no digits, or a leading zero
  int64_t exponent = 0;
  t.integer = true;
  if (p < end && *p == '.') {
    t.integer = false;
    const u8 *first = ++p;
    while (end - p >= 8 && numparse::is_made_of_eight_digits_fast(p)) {
      i = i * 100000000 + numparse::parse_eight_digits_unrolled(p);
      p += 8;
    }
    while (p < end && is_digit(*p)) i = 10 * i + u8(*p++ - '0');
    if (p == first) return nullptr;  // "1." has no decimals
    exponent = first - p;
    t.overflow = p - src - 1 > 19;
    if (t.overflow && *src == '0') {  // leading zeros of 0.000123 do not count
      const u8 *d = src + 2;
      while (d < p && *d == '0') d++;
      t.overflow = p - d > 19;
    }
  } else {
    t.overflow = p - src > 19;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    t.integer = false;
    p++;
    bool neg = p < end && *p == '-';
    if (p < end && (*p == '-' || *p == '+')) p++;
    const u8 *first = p;
    // saturated far above any exponent a double has (and below what int64 negates): 1e-9223372036854775808 is
    // simdjson's slow path's, not a signed overflow here
    uint64_t e = 0;
    while (p < end && is_digit(*p)) {
      if (e < (uint64_t(1) << 59)) e = 10 * e + u8(*p - '0');
      p++;
    }
    if (p == first || p - first > 19) return nullptr;
    exponent += neg ? -int64_t(e) : int64_t(e);
  }
  t.i = i;
  t.exponent = exponent;
  return p;
}

// The token as orjson + numpy would make it a float64: exactly, or false (decline)
inline bool to_double(const Token &t, const u8 *tok_end, double &d) {
  if (t.integer) {
    // a JSON integer is a Python int to the checked path: exact up to 2^53, past that numpy may round it
    // differently (twice): decline. "-0" is the int 0, not the float -0.0
    if (t.overflow || t.i > (uint64_t(1) << 53)) return false;
    d = double(t.i);
    if (t.negative && t.i != 0) d = -d;
    return true;
  }
  bool overflow = t.overflow || t.exponent < simdjson::internal::smallest_power ||
                  t.exponent > simdjson::internal::largest_power;
  if (!overflow && numparse::compute_float_64(t.exponent, t.i, t.negative, d)) return true;
  // simdjson's exact slow path; false for infinities (1e400: the checked path decides)
  return numparse::parse_float_fallback(t.src - t.negative, tok_end, &d);
}

// The token as an integer in [lo, hi]: only integer tokens (the checked path accepts 2.0 for an int, rarely sent:
// decline), false when out of range (the checked path explains)
inline bool to_int(const Token &t, int64_t lo, uint64_t hi, int64_t &v) {
  if (!t.integer || t.overflow) return false;
  if (t.negative) {
    if (t.i > uint64_t(1) << 63) return false;
    v = t.i == uint64_t(1) << 63 ? INT64_MIN : -int64_t(t.i);
    return t.i == 0 || v >= lo;
  }
  if (t.i > uint64_t(INT64_MAX) || t.i > hi) return false;
  v = int64_t(t.i);
  return true;
}

// ------------------------------------------------------------------------------------------------ FP32 fast path
//
// An FP32 tensor's value is float32(d), d the float64 nearest to the token's decimal value x (d is what to_double
// makes, exactly: simdjson's parse_double, and what orjson gives the checked path; numpy then rounds it to float32).
// The common token (what Python prints for a float32 value: "0.54881352186203", "-1.2345678e-05", "117.0") is read
// here with a few SSE2 operations and two multiplications instead: it gives float32(d) bit for bit when it answers at
// all, and leaves every other token, and every token near a float32 rounding boundary, to the exact path above.
//
// The shape. -?I(.F)?([eE][+-]?X)? with I 1-3 digits (no leading zero), F 1-24 digits, X 1-3 digits; anything else
// ("1.", no digit, a leading zero, 4+ integer digits, 25+ decimals, 4+ exponent digits) is left to the exact path,
// which accepts or declines it. The bytes are classified as the exact lexer classifies them (the same digit runs,
// '.', e/E, sign), so the token's end is the exact lexer's. Up to FAST_WINDOW bytes are read from the token's start,
// never past the span's end (lim): a half's region ends at a ',' or ']', which no digit run crosses, so what lies
// beyond it decides nothing.
//
// The value, in integers (exact). With F's digits f1..f24 (zeros after its last), A = I * 10^16 + f1..f16 (an
// integer < 10^19 < 2^64) and G = f17..f24 (< 10^8): x = (A + G * 10^-8) * 10^q, q = X - 16 (X without a fraction,
// A = I, G = 0). The digit values come from the 32 bytes after the '.': minus '0', and-ed with a mask of the first
// n2 bytes, summed to 8-digit numbers by multiply-adds whose lanes hold them (99, 9999, 99999999).
//
// The value, in floating point. y = (double(A) + double(G) * P8) * P[q], q in [-64, 64] (else: exact path), where
// P8 and P[q] are the literals 1e-8 and 1eq (each within 1 ulp of its power of ten: relative error <= 2u, u = 2^-53).
// double(A) is within 1 ulp of A (C++ allows either neighbour; IEEE hardware gives the nearest), double(G) is exact
// (G < 2^27), every product and sum is IEEE round-to-nearest (<= u; no fused operation: -ffp-contract=off, and
// FLT_EVAL_METHOD == 0 for the build to take this path). Both addends are >= 0, so the sum's relative error is at
// most the larger of theirs (2u; 3u + 2u^2) plus its own rounding: <= 4.02u; then the scaling: |y/x - 1| <= 7.03u.
//
// The margin. y is taken only when 2^-126 <= y < 2^127 (its biased float64 exponent in [897, 1149]): float32's
// normal range, where in y's binade [2^E, 2^(E+1)) the float32 values are the doubles whose low 29 mantissa bits are
// 0 and the float32 rounding boundaries (midpoints between neighbours) those whose low 29 bits are exactly 2^28.
// Let U = 2^(E-52), the ulp of y. |x| < 2^(E+1)(1 + 7.1u), so |y - x| < 7.03u * 2^(E+1)(1 + 7.1u) < 7.1 U; d is
// within half an ulp of x, at most U (x may lie in the next binade up); so |d - y| < 8.1 U. The midpoint nearest
// to y is min(D, 2^27) U away, D = |low29(y) - 2^28|: those of its binade D U and more; the one just above 2^(E+1)
// 2^29 U + (2^(E+1) - y) away; the one just below 2^E (2^E - 2^(E-25), in the binade below) 2^27 U + (y - 2^E).
// With D > MARGIN = 32 > 8.1 no midpoint lies between y and d, nor on d: round-to-nearest maps y and d to the same
// float32, float(y) == float(d) (the double-rounding edge, d itself a midpoint that ties to even, is among the
// excluded). |d| < 2^127 (1 + 2^-49) < FLT_MAX, so the exact path's range check would pass; |d| >= 2^-126 (1 -
// 2^-49) rounds to a normal float32 or to 2^-126, as y does. The sign is put on the float32 (rounding is symmetric).
// Not taken here (D <= MARGIN): about 65 in 2^29 of random values, and no float32 printed to round-trip (its y lies
// within 8.1 U of a float32, D ~ 2^28). Integers (no '.' or exponent, < 1000) are exact doubles: float(double(I)),
// "-0" the int 0 as in to_double; a zero with a fraction or exponent is -0.0 or 0.0 by its sign (compute_float_64's
// i == 0 case).
constexpr bool FAST_F32 =
#if defined(__SSE2__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(FLT_EVAL_METHOD) && \
    FLT_EVAL_METHOD == 0
    std::numeric_limits<double>::is_iec559 && std::numeric_limits<float>::is_iec559;
#else
    false;
#endif
#ifndef MSJSON_F32_MARGIN
#define MSJSON_F32_MARGIN 32  // (a test build sets 0, to see tests/serve/test_msjson_f32.py catch the missing check)
#endif
constexpr uint64_t MARGIN = MSJSON_F32_MARGIN;
constexpr ptrdiff_t FAST_WINDOW = 64;  // bytes read from the token's start at most

constexpr double P10[] = {
    1e-64, 1e-63, 1e-62, 1e-61, 1e-60, 1e-59, 1e-58, 1e-57, 1e-56, 1e-55, 1e-54, 1e-53, 1e-52, 1e-51, 1e-50, 1e-49,
    1e-48, 1e-47, 1e-46, 1e-45, 1e-44, 1e-43, 1e-42, 1e-41, 1e-40, 1e-39, 1e-38, 1e-37, 1e-36, 1e-35, 1e-34, 1e-33,
    1e-32, 1e-31, 1e-30, 1e-29, 1e-28, 1e-27, 1e-26, 1e-25, 1e-24, 1e-23, 1e-22, 1e-21, 1e-20, 1e-19, 1e-18, 1e-17,
    1e-16, 1e-15, 1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1,
    1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21,
    1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31, 1e32, 1e33, 1e34, 1e35, 1e36, 1e37, 1e38, 1e39, 1e40,
    1e41, 1e42, 1e43, 1e44, 1e45, 1e46, 1e47, 1e48, 1e49, 1e50, 1e51, 1e52, 1e53, 1e54, 1e55, 1e56, 1e57, 1e58, 1e59,
    1e60, 1e61, 1e62, 1e63, 1e64,
};

inline uint64_t load8(const u8 *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

// 0x80 in the byte of w (little-endian: byte 0 first) that is the first non-digit, and maybe in bytes after it (an
// addition's carry out of a non-digit byte may reach the next; digits, 0x30-0x39 + 6, carry nothing)
inline uint64_t nondigits(uint64_t w) {
  const uint64_t hi = 0xF0F0F0F0F0F0F0F0, zeros = 0x3030303030303030, low7 = 0x7F7F7F7F7F7F7F7F;
  uint64_t m = ((w & hi) ^ zeros) | (((w + 0x0606060606060606) & hi) ^ zeros);  // a byte != 0: not a digit
  return (((m & low7) + low7) | m) & ~low7;
}
inline int digit_run(uint64_t w) {  // leading digits of w, 0..8
  uint64_t nd = nondigits(w);
  return nd == 0 ? 8 : __builtin_ctzll(nd) >> 3;
}
// the first n (0..8) bytes of w, all digits, as a number: moved to the top bytes with '0's below them, then
// simdjson's parse_eight_digits_unrolled arithmetic. Each shift is done in two halves (4n bits and 4n bits), so
// n == 0 and n == 8 need no shift by 64 (undefined) and no branch: n == 0 leaves eight '0's, n == 8 no fill.
inline uint64_t digits(uint64_t w, int n) {
  const uint64_t zeros = 0x3030303030303030;
  unsigned up = 4 * unsigned(8 - n), down = 4 * unsigned(n);
  uint64_t v = ((w << up) << up) | ((zeros >> down) >> down);
  v -= zeros;
  v = (v * 10) + (v >> 8);
  return (((v & 0x000000FF000000FF) * (100 + (1000000ULL << 32))) +
          (((v >> 16) & 0x000000FF000000FF) * (1 + (10000ULL << 32)))) >> 32;
}

#if defined(__SSE2__)
// LEAD + 32 - n: n bytes of 0xFF, then zeros (n <= 32)
alignas(64) constexpr u8 LEAD[64] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                     0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                     0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};

// 32 bytes (a, b) -> bit i set when byte i is an ASCII digit
inline uint32_t digit_bits(__m128i a, __m128i b) {
  const __m128i below = _mm_set1_epi8('0' - 1), above = _mm_set1_epi8('9' + 1);
  __m128i da = _mm_and_si128(_mm_cmpgt_epi8(a, below), _mm_cmplt_epi8(a, above));
  __m128i db = _mm_and_si128(_mm_cmpgt_epi8(b, below), _mm_cmplt_epi8(b, above));
  return uint32_t(_mm_movemask_epi8(da)) | (uint32_t(_mm_movemask_epi8(db)) << 16);
}

// 32 digit values (bytes 0..9, a then b) -> four 8-digit numbers (dwords: a's first 8, a's last 8, b's first 8, b's
// last 8): pairs, then quadruples, then octets by multiply-add (each step's sums fit its lanes: 99, 9999, 99999999)
inline __m128i octets(__m128i a, __m128i b) {
  const __m128i z = _mm_setzero_si128(), m10 = _mm_set_epi16(1, 10, 1, 10, 1, 10, 1, 10),
                m100 = _mm_set_epi16(1, 100, 1, 100, 1, 100, 1, 100),
                m1e4 = _mm_set_epi16(1, 10000, 1, 10000, 1, 10000, 1, 10000);
  __m128i a2 = _mm_packs_epi32(_mm_madd_epi16(_mm_unpacklo_epi8(a, z), m10), _mm_madd_epi16(_mm_unpackhi_epi8(a, z), m10));
  __m128i b2 = _mm_packs_epi32(_mm_madd_epi16(_mm_unpacklo_epi8(b, z), m10), _mm_madd_epi16(_mm_unpackhi_epi8(b, z), m10));
  __m128i q = _mm_packs_epi32(_mm_madd_epi16(a2, m100), _mm_madd_epi16(b2, m100));
  return _mm_madd_epi16(q, m1e4);
}

// p at a token, p + FAST_WINDOW readable -> just past it, and f = float32(d); nullptr: left to the exact path
inline const u8 *fast_f32(const u8 *p, float &f) {
  const bool negative = *p == '-';
  const u8 *s = p + negative;
  int n1 = 1;
  uint64_t a = 0;  // A below
  if (s[0] != '0' || s[1] != '.') {  // (not the usual "0.": the integer digits)
    uint64_t iw = load8(s);
    n1 = digit_run(iw);
    if (n1 == 0 || n1 > 3 || (*s == '0' && n1 > 1)) return nullptr;
    a = digits(iw, n1);
  }
  uint32_t g = 0;
  const u8 *q = s + n1;
  int64_t q10 = 0;
  bool integer = true;
  if (*q == '.') {
    integer = false;
    const u8 *fr = q + 1;
    __m128i v0 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(fr));
    __m128i v1 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(fr + 16));
    int n2 = __builtin_ctz(~digit_bits(v0, v1) | 0x80000000u);  // 31: maybe more
    if (n2 == 0 || n2 > 24) return nullptr;
    // the fraction's digit values, zero from its end on: 24 digits (f1 f2 ... f24, zeros padding a shorter one)
    const __m128i zero = _mm_set1_epi8('0');
    __m128i k0 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(LEAD + 32 - n2));
    __m128i k1 = _mm_loadu_si128(reinterpret_cast<const __m128i *>(LEAD + 48 - n2));
    __m128i o = octets(_mm_and_si128(_mm_sub_epi8(v0, zero), k0), _mm_and_si128(_mm_sub_epi8(v1, zero), k1));
    uint64_t o01 = uint64_t(_mm_cvtsi128_si64(o));
    a = a * 10000000000000000 + (o01 & 0xFFFFFFFF) * 100000000 + (o01 >> 32);
    g = uint32_t(_mm_cvtsi128_si32(_mm_unpackhi_epi64(o, o)));
    q10 = -16;
    q = fr + n2;
  }
  if ((*q | 0x20) == 'e') {
    integer = false;
    const u8 *x = q + 1;
    bool down = *x == '-';
    x += *x == '-' || *x == '+';
    uint64_t xw = load8(x);
    int nx = digit_run(xw);
    if (nx == 0 || nx > 3) return nullptr;
    int64_t v = int64_t(digits(xw, nx));
    q10 += down ? -v : v;
    q = x + nx;
  }
  if (integer) {  // to_double's integer case: a < 1000, exact
    double d = double(a);
    f = float(negative && a != 0 ? -d : d);
    return q;
  }
  if (a == 0 && g == 0) {
    if (q10 < -300 || q10 > 300) return nullptr;  // (within compute_float_64's range: its i == 0 case)
    f = negative ? -0.0f : 0.0f;
    return q;
  }
  if (q10 < -64 || q10 > 64) return nullptr;
  double y = (double(a) + double(g) * P10[64 - 8]) * P10[q10 + 64];
  uint64_t bits;
  memcpy(&bits, &y, 8);
  if ((bits >> 52) - 897 > 1149 - 897) return nullptr;  // not in [2^-126, 2^127) (y > 0: no sign bit)
  if ((bits & ((uint64_t(1) << 29) - 1)) - ((uint64_t(1) << 28) - MARGIN) <= 2 * MARGIN) return nullptr;
  float v = float(y);
  uint32_t vb;
  memcpy(&vb, &v, 4);
  vb |= uint32_t(negative) << 31;  // (a branch on the sign would be mispredicted half the time on random data)
  memcpy(&f, &vb, 4);
  return q;
}
#else
inline const u8 *fast_f32(const u8 *, float &) { return nullptr; }
#endif

enum Kind { F32 = 0, F64 = 1, I8, I16, I32, I64, U8, U16, U32, U64, KINDS };

template <typename T>
struct Sink {
  T *out;
  int64_t lo;
  uint64_t hi;
  const u8 *lim;  // the span's end: bytes before it may be read (not decided on) past a half's end

  // the token at p (region up to e) into out[at] -> just past it, or nullptr (decline)
  const u8 *take(const u8 *p, const u8 *e, uint64_t at) const {
    if constexpr (std::is_same_v<T, float> && FAST_F32) {
      float f;
      const u8 *q;
      if (lim - p >= FAST_WINDOW && (q = fast_f32(p, f)) != nullptr) {
        out[at] = f;
        return q;
      }
    }
    Token t;
    const u8 *q = lex(p, e, t);
    return q != nullptr && put(t, q, at) ? q : nullptr;
  }
  bool put(const Token &t, const u8 *tok_end, uint64_t at) const {
    if constexpr (std::is_floating_point_v<T>) {
      double d;
      if (!to_double(t, tok_end, d)) return false;
      // a double past float's range (3.5e38 for FP32) has no float: ISO C++ leaves the cast undefined (IEEE 754
      // hardware gives inf, as numpy does); the checked path decides
      if constexpr (sizeof(T) < sizeof(double)) {
        if (d > double(std::numeric_limits<T>::max()) || d < double(std::numeric_limits<T>::lowest())) return false;
      }
      out[at] = T(d);
    } else {
      int64_t v;
      if (!to_int(t, lo, hi, v)) return false;
      out[at] = T(v);
    }
    return true;
  }
};

// Values of a flat array between p (after '[' or a comma) and e (its ']' or the next half's comma): exactly count
// of them, written from out[0]. 0 or DECLINE.
template <typename T>
int read_flat(const u8 *p, const u8 *e, const Sink<T> &sink, uint64_t count) {
  uint64_t n = 0;
  for (;;) {
    p = skip_ws(p, e);
    const u8 *q = n < count ? sink.take(p, e, n) : nullptr;
    if (q == nullptr) return DECLINE;
    n++;
    p = skip_ws(q, e);
    if (p == e) return n == count ? 0 : DECLINE;
    if (*p != ',') return DECLINE;
    p++;
  }
}

// A nested array at p ('['), up to e (its ']' + 1): regular (every row at a depth as long as the first), values
// only at the innermost depth, none empty; exactly count values; shape[0..depth) filled.
template <typename T>
int read_nested(const u8 *p, const u8 *e, const Sink<T> &sink, uint64_t count, int depth, int64_t *shape) {
  int64_t len[MAX_DEPTH];
  for (int i = 0; i < depth; i++) shape[i] = -1;
  int d = -1;  // current depth (index of the open array)
  uint64_t n = 0;
  while (p < e) {
    p = skip_ws(p, e);
    if (p >= e) break;
    if (*p == '[') {
      if (++d >= depth) return DECLINE;
      len[d] = 0;
      p = skip_ws(p + 1, e);
      if (p < e && *p == ']') return DECLINE;  // empty
      continue;
    }
    if (d != depth - 1) return DECLINE;  // a number above the innermost depth
    const u8 *q = n < count ? sink.take(p, e, n) : nullptr;
    if (q == nullptr) return DECLINE;
    n++;
    len[d]++;
    p = q;
    // after a value or a closed row: ',' or ']'s
    for (;;) {
      p = skip_ws(p, e);
      if (p >= e) return DECLINE;
      if (*p == ',') {
        p++;
        break;
      }
      if (*p != ']') return DECLINE;
      if (shape[d] < 0) {
        shape[d] = len[d];
      } else if (shape[d] != len[d]) {
        return DECLINE;  // ragged
      }
      p++;
      if (d-- == 0) return (skip_ws(p, e) == e && n == count) ? 0 : DECLINE;
      len[d]++;
    }
    p = skip_ws(p, e);
    if (p < e && *p == '[' && d == depth - 1) return DECLINE;  // a row among values
    if (p < e && *p != '[' && d != depth - 1) return DECLINE;  // a value among rows
  }
  return DECLINE;
}

template <typename T>
struct Half {
  const u8 *p, *e;
  Sink<T> sink;
  uint64_t count;
  int rc;
};

template <typename T>
void *run_half(void *arg) {
  auto *h = static_cast<Half<T> *>(arg);
  h->rc = read_flat(h->p, h->e, h->sink, h->count);
  return nullptr;
}

template <typename T>
int read_as(const u8 *buf, const msjson_span &s, T *out, int64_t lo, uint64_t hi, int64_t *shape, int threads) {
  const u8 *p = buf + s.start, *e = buf + s.end;
  if (s.depth > 1) return read_nested(p, e, Sink<T>{out, lo, hi, e}, s.count, int(s.depth), shape);
  shape[0] = int64_t(s.count);
  if (threads > 1 && s.split > s.start && s.split + 1 < s.end && s.split_index > 0 && s.split_index < s.count) {
    Half<T> second{buf + s.split + 1, e - 1, Sink<T>{out + s.split_index, lo, hi, e}, s.count - s.split_index, DECLINE};
    pthread_t th;
    // the helper lives for a millisecond: signals stay with the process' own threads (it starts with all blocked)
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = pthread_create(&th, nullptr, run_half<T>, &second);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (started == 0) {
      int rc = read_flat(p + 1, buf + s.split, Sink<T>{out, lo, hi, e}, s.split_index);
      pthread_join(th, nullptr);
      return rc == 0 && second.rc == 0 ? 0 : DECLINE;
    }  // no thread to be had: one does it all
  }
  return read_flat(p + 1, e - 1, Sink<T>{out, lo, hi, e}, s.count);
}

// ------------------------------------------------------------------------------------------------ quantize

// Values the rounding below keeps exact: |zero point| up to this, so that (type's bound - zero point) is an exact
// float and every clamped value, its truncation and its fraction are exact too (all well below 2^24)
constexpr int32_t MAX_ZERO_POINT = 1 << 20;

// n float32 values (in: any alignment, native byte order) -> out, as numerics.quantize computes them: v = x * inv in
// float32 (the caller passes numpy's float32(1) / float32(scale)), round half to even, + zero point, saturate to T.
// NaN gives the zero point (numerics.quantize maps it to 0.0 first, too).
//
// Clamping comes before rounding: clamp(rint(v) + zp, min, max) == rint(clamp(v, min - zp, max - zp)) + zp because
// both bounds are integers and rint is monotonic. After the clamp |v| < 2^21, so adding 1.5 * 2^23 lands in
// [2^23, 2^24), where a float's unit in the last place is 1: the sum is rounded to an integer by the FPU's rounding
// mode (IEEE-754's default, round half to even, the mode numpy's rint uses too; 1.5 * 2^23 is even, so ties go to
// the even v), and subtracting it back is exact. The conversion to int32 then meets only integers in range (defined
// behaviour, no rounding left). The product is not fused with the addition: a select lies between them, and the
// build passes -ffp-contract=off. Branch-free: the compiler vectorizes it at the baseline ISA (SSE2, NEON).
template <typename T>
void quantize_as(const u8 *__restrict in, size_t n, float inv, int32_t zp, T *__restrict out) {
  const float lo = float(int32_t(std::numeric_limits<T>::min()) - zp);
  const float hi = float(int32_t(std::numeric_limits<T>::max()) - zp);
  const float round = 12582912.0f;  // 1.5 * 2^23
  for (size_t i = 0; i < n; i++) {
    float x;
    memcpy(&x, in + i * sizeof(float), sizeof(float));  // a body's bytes need not be aligned for float
    float v = x * inv;
    v = v == v ? v : 0.0f;  // NaN -> 0
    v = v > lo ? v : lo;  // (the forms of maxps / minps: one instruction each)
    v = v < hi ? v : hi;
    v = (v + round) - round;
    out[i] = T(int32_t(v) + zp);
  }
}

}  // namespace

MSJSON_API int msjson_abi(void) { return ABI; }

// The FP32 fast path is named when it is built in (x86-64 with SSE2 and plain float arithmetic): a build that lost
// it (another CPU, FLT_EVAL_METHOD, a header change) reads the same values, only slower, and a test can tell.
MSJSON_API const char *msjson_version(void) {
  return FAST_F32 ? "msjson 2, simdjson " SIMDJSON_VERSION " number parsing, f32 fast path"
                  : "msjson 2, simdjson " SIMDJSON_VERSION " number parsing";
}

// protocol 2: OIP v2 (inputs[i].data); 1: TF Serving v1 (instances, inputs, inputs.<name>). Returns the number of
// spans found (0: none; the caller's usual path applies) or a negative number to decline.
MSJSON_API long msjson_scan(const uint8_t *buf, size_t len, int protocol, msjson_span *spans, size_t max) {
  if (buf == nullptr || spans == nullptr) return DECLINE;
  Scan s{buf, buf + len, spans, max};
  return protocol == 2 ? scan_v2(s) : protocol == 1 ? scan_v1(s) : DECLINE;
}

// One span (from msjson_scan on the same buf) into out: span->count values of kind (0 f32, 1 f64, 2-5 int8-int64,
// 6-9 uint8-uint64); shape gets span->depth dimensions. threads > 1: a flat array is parsed in two halves at once.
// 0, or DECLINE.
MSJSON_API int msjson_read(const uint8_t *buf, size_t len, const msjson_span *span, int kind, void *out,
                           int64_t *shape, int threads) {
  if (buf == nullptr || span == nullptr || out == nullptr || shape == nullptr) return DECLINE;
  const msjson_span &s = *span;
  if (s.end > len || s.start >= s.end || s.count == 0 || s.depth < 1 || s.depth > MAX_DEPTH) return DECLINE;
  if (s.split != 0 && (s.split <= s.start || s.split >= s.end)) return DECLINE;
  switch (kind) {
    case F32: return read_as(buf, s, static_cast<float *>(out), 0, 0, shape, threads);
    case F64: return read_as(buf, s, static_cast<double *>(out), 0, 0, shape, threads);
    case I8: return read_as(buf, s, static_cast<int8_t *>(out), INT8_MIN, INT8_MAX, shape, threads);
    case I16: return read_as(buf, s, static_cast<int16_t *>(out), INT16_MIN, INT16_MAX, shape, threads);
    case I32: return read_as(buf, s, static_cast<int32_t *>(out), INT32_MIN, INT32_MAX, shape, threads);
    case I64: return read_as(buf, s, static_cast<int64_t *>(out), INT64_MIN, INT64_MAX, shape, threads);
    case U8: return read_as(buf, s, static_cast<uint8_t *>(out), 0, UINT8_MAX, shape, threads);
    case U16: return read_as(buf, s, static_cast<uint16_t *>(out), 0, UINT16_MAX, shape, threads);
    case U32: return read_as(buf, s, static_cast<uint32_t *>(out), 0, UINT32_MAX, shape, threads);
    case U64: return read_as(buf, s, static_cast<uint64_t *>(out), 0, INT64_MAX, shape, threads);
    default: return DECLINE;
  }
}

// n float32 values at in -> out, quantized to kind (2 int8, 3 int16, 6 uint8; msjson_read's numbering) with the
// reciprocal of the scale (inv_scale, a float32: numerics.quantize's float32(1) / float32(scale)) and zero_point.
// in may be unaligned; out must be aligned for its type; they must not overlap. 0, or DECLINE (another kind, a zero
// point past +-2^20, or a platform whose float arithmetic is not plain float32: the caller quantizes with numpy).
MSJSON_API int msjson_quantize(const void *in, size_t n, float inv_scale, int32_t zero_point, int kind, void *out) {
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
  (void)in, (void)n, (void)inv_scale, (void)zero_point, (void)kind, (void)out;
  return DECLINE;  // float expressions evaluated wider than float32 (x87): the products would differ from numpy's
#else
  if ((in == nullptr || out == nullptr) && n != 0) return DECLINE;
  if (zero_point > MAX_ZERO_POINT || zero_point < -MAX_ZERO_POINT) return DECLINE;
  const u8 *src = static_cast<const u8 *>(in);
  switch (kind) {
    case I8: quantize_as(src, n, inv_scale, zero_point, static_cast<int8_t *>(out)); return 0;
    case I16: quantize_as(src, n, inv_scale, zero_point, static_cast<int16_t *>(out)); return 0;
    case U8: quantize_as(src, n, inv_scale, zero_point, static_cast<uint8_t *>(out)); return 0;
    default: return DECLINE;
  }
#endif
}
