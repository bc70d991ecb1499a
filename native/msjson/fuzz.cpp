// libmsjson's fuzz driver: hostile request bodies through the C entry points, called as
// modelship/serve/nativejson.py calls them (msjson_scan into MAX_SPANS spans, then msjson_read of each span into a
// buffer of exactly span.count values of the input's type and a shape of max(1, depth)), built with
// -fsanitize=address,undefined (native/msjson/fuzz builds and runs it). Every body is copied into a heap block of
// exactly its length, so a read one byte past the body is an ASan report. Besides the sanitizers, it checks what the
// Python side relies on: spans inside the body, in order, at '[' ... ']', a count no larger than the body, a split
// comma inside its span; a successful read's shape multiplies to its count; a split read gives what a one-thread
// read gives; an FP32 read is float32 of the FP64 read (the exact path: simdjson's parse_double) bit for bit and
// declines where it declines or a value is past float32's range (check_f32: the FP32 fast path against the exact
// path; the bodies hold float32 rounding boundaries and their neighbours, float32_token). Then msjson_quantize on
// random float32 arrays against a plain reference (fuzz_quantize).
//
//   fuzz [--seed S] [--mutations N] [--seconds T] [--crash FILE] [--only] [FILE...]
//
// Inputs: built-in seeds (valid OIP v2 / TF Serving v1 bodies, flat and nested, odd numbers) and FILEs (one body
// each; --only: just these, to replay a regression), then deterministic passes over them (every truncation, every one-byte deletion, bodies of 0..130 bytes
// around the scanner's 64-byte steps, deep nesting, huge counts), then N random mutations (or T seconds of them).
// A sanitizer report or a broken invariant aborts; the body being run is written first to --crash (default
// msjson-crash.json) for a regression test. Prints how many bodies it ran.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cfloat>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

struct msjson_span {
  uint64_t start, end, count, split, split_index, name_start, name_len;
  uint32_t depth, owner;
};
extern "C" long msjson_scan(const uint8_t *buf, size_t len, int protocol, msjson_span *spans, size_t max);
extern "C" int msjson_read(const uint8_t *buf, size_t len, const msjson_span *span, int kind, void *out,
                           int64_t *shape, int threads);
extern "C" int msjson_quantize(const void *in, size_t n, float inv_scale, int32_t zero_point, int kind, void *out);

namespace {

constexpr size_t MAX_SPANS = 64;  // nativejson.MAX_SPANS
constexpr size_t KIND_SIZE[10] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};

std::string current;
const char *crash_path = "msjson-crash.json";
uint64_t ran = 0;

// the sanitizers abort on their first report (then SIGABRT writes the body out)
// (no leak check: the library allocates nothing, and LeakSanitizer needs ptrace, which a container may refuse)
extern "C" const char *__asan_default_options() { return "abort_on_error=1:detect_leaks=0"; }
extern "C" const char *__ubsan_default_options() { return "abort_on_error=1:halt_on_error=1:print_stacktrace=1"; }

void on_abort(int) {
  int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t done = 0;
    while (done < current.size()) {
      ssize_t w = write(fd, current.data() + done, current.size() - done);
      if (w <= 0) break;
      done += size_t(w);
    }
    close(fd);
  }
  static const char msg[] = "msjson-fuzz: the failing body is in the --crash file\n";
  ssize_t ignored = write(2, msg, sizeof msg - 1);
  (void)ignored;
  signal(SIGABRT, SIG_DFL);
  raise(SIGABRT);
}

[[noreturn]] void fail(const char *what, long detail) {
  fprintf(stderr, "msjson-fuzz: invariant broken: %s (%ld) after %" PRIu64 " bodies\n", what, detail, ran);
  abort();
}

struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  size_t below(size_t n) { return n == 0 ? 0 : size_t(next() % n); }
  bool coin(int one_in) { return below(size_t(one_in)) == 0; }
};

// FP32 (the fast path where it answers) against the exact path's own arithmetic: FP64 is read by the exact path
// only, and FP32 is float32(that double), declined where FP64 declines or a value lies past float32's range.
uint64_t f32_checked = 0;
void check_f32(const uint8_t *buf, size_t len, const msjson_span &s, int rc, const float *got) {
  std::vector<double> d(s.count);
  std::vector<int64_t> shape(s.depth > 1 ? s.depth : 1);
  int rc64 = msjson_read(buf, len, &s, 1, d.data(), shape.data(), 1);
  bool in_range = true;
  for (size_t i = 0; rc64 == 0 && i < d.size(); i++) in_range = in_range && std::fabs(d[i]) <= double(FLT_MAX);
  int want = rc64 == 0 && in_range ? 0 : -1;
  if (rc != want) fail("FP32 decides otherwise than FP64 (the exact path)", rc);
  for (size_t i = 0; rc == 0 && i < d.size(); i++) {
    float f = float(d[i]);
    if (memcmp(&f, &got[i], 4) != 0) {
      fprintf(stderr, "msjson-fuzz: value %zu: FP32 read %a, the exact path's double %a gives %a\n", i,
              double(got[i]), d[i], double(f));
      fail("FP32 differs from float32(the exact path's double)", long(i));
    }
  }
  f32_checked += rc == 0 ? s.count : 0;
}

void run_one(const std::string &body, Rng &rng, bool all_kinds = true) {
  current = body;
  ran++;
  // exactly the body's bytes in their own heap block (malloc(0) for the empty body: a valid, unreadable block)
  uint8_t *buf = static_cast<uint8_t *>(malloc(body.size()));
  if (!body.empty()) memcpy(buf, body.data(), body.size());
  size_t len = body.size();
  for (int protocol = 1; protocol <= 2; protocol++) {
    size_t max = rng.coin(16) ? rng.below(3) : MAX_SPANS;
    auto *spans = static_cast<msjson_span *>(malloc(sizeof(msjson_span) * (max ? max : 1)));
    long n = msjson_scan(buf, len, protocol, spans, max);
    if (n > long(max)) fail("more spans than room", n);
    uint64_t prev_end = 0;
    for (long i = 0; i < n; i++) {
      const msjson_span &s = spans[i];
      if (s.start < prev_end || s.start >= s.end || s.end > len) fail("span outside the body or out of order", i);
      if (buf[s.start] != '[' || buf[s.end - 1] != ']') fail("span not at brackets", i);
      if (s.count > len) fail("count larger than the body", long(s.count));
      if (s.depth < 1 || s.depth > 32) fail("depth", long(s.depth));
      if (s.split != 0 && (s.split <= s.start || s.split >= s.end - 1 || buf[s.split] != ','))
        fail("split not a comma inside the span", long(s.split));
      if (s.owner == 2 && (s.name_start > len || s.name_len > len - s.name_start)) fail("name outside the body", i);
      prev_end = s.end;
    }
    for (long i = 0; i < n * (all_kinds ? 10 : 1); i++) {
      const msjson_span &s = spans[i % n];
      int kind = all_kinds ? int(i / n) : int(rng.below(10));
      // nativejson._read: np.empty(count, dtype), shape of max(1, depth) int64
      size_t bytes = size_t(s.count) * KIND_SIZE[kind];
      void *out = malloc(bytes);
      auto *shape = static_cast<int64_t *>(malloc(sizeof(int64_t) * (s.depth > 1 ? s.depth : 1)));
      int rc = msjson_read(buf, len, &s, kind, out, shape, 1);
      if (rc != 0 && rc != -1) fail("read's return", rc);
      if (kind == 0) check_f32(buf, len, s, rc, static_cast<const float *>(out));
      if (rc == 0) {
        uint64_t product = 1;
        for (uint32_t d = 0; d < s.depth; d++) {
          if (shape[d] <= 0) fail("shape", long(shape[d]));
          product *= uint64_t(shape[d]);
        }
        if (product != s.count) fail("shape does not multiply to the count", long(product));
      }
      if (s.split != 0 || rng.coin(64)) {  // the two-thread read: the same answer
        void *out2 = malloc(bytes);
        auto *shape2 = static_cast<int64_t *>(malloc(sizeof(int64_t) * (s.depth > 1 ? s.depth : 1)));
        int rc2 = msjson_read(buf, len, &s, kind, out2, shape2, 2);
        if (rc2 != rc) fail("two threads decide otherwise than one", rc2);
        if (rc == 0 && memcmp(out, out2, bytes) != 0) fail("two threads read other values", i);
        free(out2);
        free(shape2);
      }
      free(out);
      free(shape);
    }
    free(spans);
  }
  free(buf);
}

// ------------------------------------------------------------------------------------------------ bodies

const char *const NUMBERS[] = {
    "0", "-0", "1", "-1", "0.5", "1e5", "1E-7", "2.5e+3", "-0.0", "127", "-128", "255", "256", "65535",
    "9007199254740992", "9007199254740993", "9223372036854775807", "-9223372036854775808", "18446744073709551615",
    "18446744073709551616", "1e308", "1.7976931348623157e308", "1e309", "-1e400", "5e-324", "4.9e-324", "1e-400",
    "3.4028235e38", "3.4028236e38", "1e39", "-1e39", "1e-46", "0.1", "0.30000000000000004",
    "0.84442186355590820000000001", "123456789012345678901234567890", "1e0000000000000000000001",
    "1e9223372036854775808", "1e-9223372036854775808", "1e18446744073709551615", "1e-18446744073709551616",
    "00", "01", "1.", ".5", "-", "+1", "1e", "1e+", "NaN", "Infinity", "-Infinity", "true", "null", "\"1\"",
};

// a float32 value's text, as the FP32 fast path meets it: Python's repr-like 17 digits, a float32 rounding
// boundary (the midpoint of two neighbours, exact in a double) to 16-20 digits, or one double ulp either side of it,
// in e-form or positional form
std::string float32_token(Rng &rng) {
  uint32_t bits = uint32_t(rng.next()) & 0x7FFFFFFF;
  if (rng.coin(2)) bits = (uint32_t(100 + rng.below(34)) << 23) | (bits & 0x7FFFFF);  // ~1e-8 .. ~100
  if (bits >= 0x7F7FFFFF) bits = 0x3F800000;
  float lo, hi;
  memcpy(&lo, &bits, 4);
  uint32_t up = bits + 1;
  memcpy(&hi, &up, 4);
  double v = rng.coin(3) ? double(lo) : (double(lo) + double(hi)) / 2;
  if (rng.coin(3)) v = std::nextafter(v, rng.coin(2) ? INFINITY : -INFINITY);
  char tmp[96];
  const char *sign = rng.coin(2) ? "-" : "";
  switch (rng.below(3)) {
    case 0: snprintf(tmp, sizeof tmp, "%s%.17g", sign, v); break;
    case 1: snprintf(tmp, sizeof tmp, "%s%.*e", sign, int(15 + rng.below(5)), v); break;
    default: snprintf(tmp, sizeof tmp, "%s%.*f", sign, int(12 + rng.below(14)), v); break;
  }
  std::string t = tmp;
  if (rng.coin(8)) {  // E, e+ and leading zeros of the exponent
    size_t e = t.find('e');
    if (e != std::string::npos) t[e] = 'E';
  }
  return t;
}

// an FP32 body of float32 tokens, most far enough from the array's end for the fast path's window
std::string float32_body(Rng &rng) {
  std::string a = "{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"data\": [";
  size_t k = 1 + rng.below(60);
  for (size_t i = 0; i < k; i++) a += (i ? ", " : "") + float32_token(rng);
  return a + std::string(rng.below(80), ' ') + "]}]}";
}

std::string number(Rng &rng) {
  if (rng.coin(8)) {
    std::string d = rng.coin(2) ? "0." : std::string(1, char('1' + rng.below(9)));
    size_t k = 1 + rng.below(rng.coin(4) ? 800 : 30);
    for (size_t j = 0; j < k; j++) d += rng.coin(3) ? '0' : char('0' + rng.below(10));
    if (rng.coin(3)) d += "e" + std::string(rng.coin(2) ? "-" : "") + std::to_string(rng.below(500));
    return d;
  }
  if (rng.coin(3)) return NUMBERS[rng.below(sizeof NUMBERS / sizeof *NUMBERS)];
  char tmp[64];
  switch (rng.below(3)) {
    case 0: snprintf(tmp, sizeof tmp, "%d", int(rng.below(2001)) - 1000); break;
    case 1: snprintf(tmp, sizeof tmp, "%.17g", (double(rng.next() >> 11) / double(1ull << 53) - 0.5) * 1e6); break;
    default: snprintf(tmp, sizeof tmp, "%g", std::ldexp(double(rng.next() >> 11), int(rng.below(200)) - 150)); break;
  }
  return tmp;
}

std::string ws(Rng &rng) {
  static const char W[] = {' ', '\n', '\r', '\t'};
  std::string s;
  if (rng.coin(3)) {
    size_t k = rng.below(rng.coin(8) ? 70 : 3);
    for (size_t j = 0; j < k; j++) s += W[rng.below(4)];
  }
  return s;
}

// a regular array of the given shape
std::string array(Rng &rng, const std::vector<size_t> &shape, size_t d = 0) {
  std::string s = "[" + ws(rng);
  for (size_t j = 0; j < shape[d]; j++) {
    if (j) s += ws(rng) + "," + ws(rng);
    s += d + 1 < shape.size() ? array(rng, shape, d + 1) : number(rng);
  }
  return s + ws(rng) + "]";
}

std::vector<size_t> some_shape(Rng &rng) {
  std::vector<size_t> shape;
  size_t dims = 1 + (rng.coin(2) ? 0 : rng.below(4));
  size_t budget = rng.coin(16) ? 20000 : 200;
  for (size_t d = 0; d < dims; d++) {
    size_t k = 1 + rng.below(d + 1 == dims ? budget : 4);
    shape.push_back(k);
    budget = budget / k + 1;
  }
  return shape;
}

std::string noise_member(Rng &rng) {
  static const char *const NOISE[] = {
      "\"id\": \"a],[\\\"x\\\\\"", "\"parameters\": {\"p\": [{\"q\": \"][,\"}], \"r\": [1, [2, [3]]]}",
      "\"outputs\": [{\"name\": \"y\"}]", "\"s\": \"\\u005b\\\\\"", "\"n\": null", "\"t\": [true, false, {}]",
      "\"d\\u0061ta\": [1]", "\"signature_name\": \"serving_default\"",
  };
  return NOISE[rng.below(sizeof NOISE / sizeof *NOISE)];
}

std::string v2_body(Rng &rng) {
  std::string s = "{" + ws(rng);
  if (rng.coin(3)) s += noise_member(rng) + "," + ws(rng);
  s += "\"inputs\"" + ws(rng) + ":" + ws(rng) + "[";
  size_t inputs = 1 + rng.below(3);
  for (size_t i = 0; i < inputs; i++) {
    if (i) s += ",";
    std::vector<size_t> shape = some_shape(rng);
    std::string dims = "[";
    for (size_t d = 0; d < shape.size(); d++) dims += (d ? "," : "") + std::to_string(shape[d]);
    dims += "]";
    s += "{\"name\": \"x" + std::to_string(i) + "\", \"shape\": " + dims + ", \"datatype\": \"FP32\", ";
    if (rng.coin(4)) s += noise_member(rng) + ", ";
    s += "\"data\":" + ws(rng) + array(rng, rng.coin(2) ? std::vector<size_t>{shape[0]} : shape) + "}";
  }
  s += "]";
  if (rng.coin(3)) s += "," + ws(rng) + noise_member(rng);
  return s + ws(rng) + "}";
}

std::string v1_body(Rng &rng) {
  switch (rng.below(3)) {
    case 0: return "{\"instances\": " + array(rng, some_shape(rng)) + ws(rng) + "}";
    case 1: return "{\"signature_name\": \"serving_default\", \"inputs\": " + array(rng, some_shape(rng)) + "}";
    default: {
      std::string s = "{\"inputs\": {";
      size_t k = 1 + rng.below(3);
      for (size_t j = 0; j < k; j++) s += (j ? ", \"" : "\"") + std::string(1, char('a' + j)) + "\": " +
                                          array(rng, some_shape(rng));
      return s + "}}";
    }
  }
}

std::string body(Rng &rng) { return rng.coin(2) ? v2_body(rng) : v1_body(rng); }

const char INTERESTING[] = "[]{},\":\\0123456789.eE-+ \t\n\r\v\f\0\x7f\x80\xff\xc3YyNaIf";

void mutate(std::string &s, Rng &rng, const std::vector<std::string> &pool) {
  size_t at = rng.below(s.size() + 1);
  switch (rng.below(13)) {
    case 0:
      if (!s.empty()) s[rng.below(s.size())] ^= char(1 << rng.below(8));
      break;
    case 1:
      if (!s.empty()) s[rng.below(s.size())] = INTERESTING[rng.below(sizeof INTERESTING - 1)];
      break;
    case 2: s.insert(at, 1, INTERESTING[rng.below(sizeof INTERESTING - 1)]); break;
    case 3: s.erase(at, 1 + rng.below(rng.coin(4) ? 200 : 4)); break;
    case 4: s.resize(at); break;
    case 5: {
      size_t from = rng.below(s.size() + 1);
      s.insert(at, s.substr(from, 1 + rng.below(rng.coin(4) ? 500 : 10)));
      break;
    }
    case 6: s.insert(at, 1 + rng.below(rng.coin(4) ? 2000 : 40), rng.coin(3) ? ']' : '['); break;
    case 7: s.insert(at, number(rng)); break;
    case 8: s.insert(at, std::string(1 + rng.below(300), "0123456789"[rng.below(10)])); break;
    case 9: s.insert(at, 1 + rng.below(130), " \n\r\t\v\f\0,"[rng.below(8)]); break;
    case 10: {
      static const char *const BAD[] = {"\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "\0", "\\", "\\\"",
                                        "\"", "\\u", "\\ud800", "\xe2\x80\xa8"};
      s.insert(at, BAD[rng.below(sizeof BAD / sizeof *BAD)]);
      break;
    }
    case 11: {
      const std::string &o = pool[rng.below(pool.size())];
      size_t from = rng.below(o.size() + 1);
      s = s.substr(0, at) + o.substr(from);
      break;
    }
    default: {  // a run of commas (the count) or of values
      size_t k = 1 + rng.below(rng.coin(8) ? 100000 : 100);
      std::string run;
      bool commas = rng.coin(2);
      for (size_t j = 0; j < k; j++) run += commas ? "," : "1,";
      s.insert(at, run);
      break;
    }
  }
}

std::vector<std::string> fixed_seeds() {
  std::vector<std::string> seeds = {
      R"({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1e5, -0.0, 1E-7, 2.5e+3]}]})",
      R"({"inputs":[{"data":[0.1,0.30000000000000004,5e-324,1.7976931348623157e308],"name":"x","datatype":"FP64","shape":[4]}]})",
      R"({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]})",
      R"({"inputs": [{"name": "k", "shape": [3], "datatype": "INT8", "data": [-128, 127, -0]}]})",
      R"({"id": "a]", "inputs": [{"name": "x", "parameters": {"p": [{"q": "]["}]}, "shape": [1], "datatype": "FP32", "data": [ 1 ]}], "outputs": [{"name": "y"}]})",
      R"({"instances": [[[1.5, 2], [3, 4]], [[5, 6], [7, 8e-1]]]})",
      R"({"signature_name": "serving_default", "inputs": [1, 2, 3, 4]})",
      R"({"inputs": {"x": [[1, 2, 3, 4]], "k": [[1, 2]]}})",
      R"({"inputs": [{"name": "a", "data": [1,2]}, {"name": "b", "data": [[3],[4]]}, {"name": "c", "data": ["s"]}]})",
      R"({"instances": [1,2,3], "inputs": [4,5]})",
  };
  return seeds;
}

std::string padded_v2(size_t total) {  // a valid v2 body of exactly total bytes, where it can be
  std::string head = R"({"inputs":[{"data":[)", tail = "]}]}";
  std::string s = head;
  while (s.size() + tail.size() + 2 <= total) s += s.size() == head.size() ? "1" : ",1";
  if (s.size() + tail.size() < total) s += std::string(total - s.size() - tail.size(), ' ');
  return (s + tail).substr(0, total);
}

}  // namespace

// msjson_quantize on random float32 arrays (random bit patterns: NaNs, infinities, subnormals; values near integers
// and ties; 0..300 values at byte offsets 0..3 of a block of exactly their size), random reciprocal scales (2^-40 ..
// 2^40, 0, inf) and zero points (in range, at the library's bound, past it), each kind: every value must be what a
// plain double reference gives (x * inv in float32, NaN -> 0, nearbyint: half to even, + zero point, saturate),
// nothing read or written outside the blocks (ASan), and no float -> int conversion out of range (UBSan's
// float-cast-overflow). Returns how many arrays it ran.
uint64_t fuzz_quantize(Rng &rng, uint64_t rounds) {
  static const int kinds[3] = {2, 3, 6};  // int8, int16, uint8
  static const int64_t lo_of[3] = {-128, -32768, 0}, hi_of[3] = {127, 32767, 255};
  static const size_t size_of[3] = {1, 2, 1};
  for (uint64_t r = 0; r < rounds; r++) {
    int k = int(rng.below(3));
    size_t n = rng.below(rng.coin(8) ? 301 : 40);
    size_t offset = rng.below(4);
    float inv;
    switch (rng.below(8)) {
      case 0: inv = 0.0f; break;
      case 1: inv = INFINITY; break;
      default: inv = ldexpf(1.0f + float(rng.below(1u << 23)) / float(1u << 23), int(rng.below(81)) - 40);
    }
    int32_t zp;
    switch (rng.below(6)) {
      case 0: zp = int32_t(lo_of[k]); break;
      case 1: zp = int32_t(hi_of[k]); break;
      case 2: zp = rng.coin(2) ? (1 << 20) : -(1 << 20); break;
      case 3: zp = rng.coin(2) ? (1 << 20) + 1 : -(1 << 20) - 1; break;
      default: zp = int32_t(rng.below(size_t(hi_of[k] - lo_of[k] + 1))) + int32_t(lo_of[k]);
    }
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++) {
      uint32_t bits = uint32_t(rng.next());
      float f;
      memcpy(&f, &bits, 4);
      if (rng.coin(2)) f = (float(int32_t(rng.below(1u << 18)) - (1 << 17)) + (rng.coin(2) ? 0.5f : 0.0f)) / inv;
      x[i] = f;
    }
    uint8_t *in = static_cast<uint8_t *>(malloc(offset + n * 4 + 1));
    if (n) memcpy(in + offset, x.data(), n * 4);
    void *out = malloc(n * size_of[k] + (n == 0));
    current = "msjson_quantize";
    int rc = msjson_quantize(in + offset, n, inv, zp, kinds[k], out);
    bool declines = zp > (1 << 20) || zp < -(1 << 20);
    if (rc != (declines ? -1 : 0)) fail("quantize's return", rc);
    for (size_t i = 0; i < n && rc == 0; i++) {
      volatile float v = x[i] * inv;  // float32, as numpy
      float f = v;
      double want = (f != f ? 0.0 : nearbyint(double(f))) + double(zp);
      want = want < double(lo_of[k]) ? double(lo_of[k]) : want > double(hi_of[k]) ? double(hi_of[k]) : want;
      int64_t got = k == 0 ? int64_t(static_cast<int8_t *>(out)[i])
                  : k == 1 ? int64_t(static_cast<int16_t *>(out)[i])
                           : int64_t(static_cast<uint8_t *>(out)[i]);
      if (double(got) != want) {
        fprintf(stderr, "msjson-fuzz: kind %d, x %a * inv %a = %a, zero point %d: got %" PRId64 ", want %.0f\n",
                kinds[k], double(x[i]), double(inv), double(f), zp, got, want);
        fail("quantized value differs from the reference", long(i));
      }
    }
    free(in);
    free(out);
    ran++;
  }
  return rounds;
}

int main(int argc, char **argv) {
  uint64_t seed = 1, mutations = 100000;
  double seconds = 0;
  bool only = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) {
      seed = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--mutations" && i + 1 < argc) {
      mutations = strtoull(argv[++i], nullptr, 10);
    } else if (a == "--seconds" && i + 1 < argc) {
      seconds = strtod(argv[++i], nullptr);
    } else if (a == "--only") {
      only = true;
    } else if (a == "--crash" && i + 1 < argc) {
      crash_path = argv[++i];
    } else {
      files.push_back(a);
    }
  }
  signal(SIGABRT, on_abort);
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 1};
  std::vector<std::string> seeds = only ? std::vector<std::string>{} : fixed_seeds();
  for (const std::string &f : files) {
    FILE *fp = fopen(f.c_str(), "rb");
    if (fp == nullptr) {
      fprintf(stderr, "msjson-fuzz: cannot read %s\n", f.c_str());
      return 2;
    }
    std::string s;
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) s.append(chunk, got);
    fclose(fp);
    seeds.push_back(s);
  }
  if (only) {  // each file as is, cut at every byte and without each byte
    for (const std::string &s : seeds) {
      for (size_t cut = 0; cut <= s.size(); cut++) run_one(s.substr(0, cut), rng);
      for (size_t del = 0; del < s.size(); del++) run_one(s.substr(0, del) + s.substr(del + 1), rng);
    }
    printf("msjson-fuzz: %" PRIu64 " bodies from %zu files, no report\n", ran, seeds.size());
    return 0;
  }
  uint64_t quantized = fuzz_quantize(rng, mutations / 10 + 1000);
  for (int j = 0; j < 8; j++) seeds.push_back(body(rng));

  // every seed as is, cut at every byte, and without each byte
  for (const std::string &s : seeds) {
    for (size_t cut = 0; cut <= s.size(); cut++) run_one(s.substr(0, cut), rng);
    if (s.size() <= 4096)
      for (size_t del = 0; del < s.size(); del++) run_one(s.substr(0, del) + s.substr(del + 1), rng);
  }
  // 0..130 bytes, around the 64-byte steps: valid bodies, then each cut short of its last brackets
  for (size_t total = 0; total <= 130; total++) {
    std::string s = padded_v2(total);
    run_one(s, rng);
    for (size_t drop = 1; drop <= 6 && drop <= s.size(); drop++) run_one(s.substr(0, s.size() - drop), rng);
    std::string arr = "{\"instances\":[" + std::string(total, '1') ;
    run_one(arr, rng);
    run_one(arr + "]", rng);
    run_one(std::string(total, '['), rng);
    run_one("{\"instances\":" + std::string(total, '['), rng);
    run_one("{\"instances\":[" + std::string(total, ' '), rng);
    run_one("{\"instances\":[1" + std::string(total, ',') + "]}", rng);
    run_one("{\"instances\":[\"" + std::string(total, 'a'), rng);
    run_one("{\"x\":\"" + std::string(total, '\\'), rng);
  }
  // float32 rounding boundaries and their neighbours (FP32 checked against the exact path in each)
  for (int j = 0; j < 3000; j++) run_one(float32_body(rng), rng, false);
  // deep nesting, in the tensor and elsewhere; huge counts
  for (size_t depth : {31, 32, 33, 64, 1000, 200000}) {
    run_one("{\"instances\":" + std::string(depth, '[') + "1" + std::string(depth, ']') + "}", rng);
    run_one("{\"instances\":" + std::string(depth, '['), rng);
    run_one("{\"x\":" + std::string(depth, '[') + std::string(depth, ']') + ",\"instances\":[1]}", rng);
    run_one("{\"x\":" + std::string(depth, '{'), rng);
  }
  for (size_t k : {1000, 100000, 1000000}) {
    std::string commas(k, ',');
    run_one("{\"instances\":[" + commas + "]}", rng);
    run_one("{\"instances\":[1" + commas + "]}", rng);
    run_one("{\"instances\":[[" + commas + "]]}", rng);
    std::string ones;
    for (size_t j = 0; j < k; j++) ones += j ? ",1" : "1";
    run_one("{\"instances\":[" + ones + "]}", rng);
    run_one("{\"instances\":[" + ones + ",\"s\"]}", rng);
    run_one("{\"instances\":[" + ones + ",1.]}", rng);
    run_one("{\"instances\":[" + ones, rng);
  }
  uint64_t fixed = ran;

  std::vector<std::string> pool = seeds;
  for (int j = 0; j < 64; j++) pool.push_back(body(rng));
  for (int j = 0; j < 16; j++) pool.push_back(float32_body(rng));
  time_t t0 = time(nullptr);
  for (uint64_t m = 0; seconds > 0 ? difftime(time(nullptr), t0) < seconds : m < mutations; m++) {
    if (m % 4096 == 0 && m > 0) pool[rng.below(pool.size())] = body(rng);
    std::string s = pool[rng.below(pool.size())];
    size_t k = 1 + rng.below(rng.coin(4) ? 16 : 3);
    for (size_t j = 0; j < k; j++) mutate(s, rng, pool);
    run_one(s, rng, false);
    if (rng.coin(64)) pool[rng.below(pool.size())] = s;  // keep some mutants: mutations compound
  }
  printf("msjson-fuzz: %" PRIu64 " bodies (%" PRIu64 " fixed, %" PRIu64 " mutated) and %" PRIu64
         " quantized arrays, seed %" PRIu64 ", %" PRIu64 " FP32 values checked against the exact path, no report\n",
         ran - quantized, fixed - quantized, ran - fixed, quantized, seed, f32_checked);
  return 0;
}
