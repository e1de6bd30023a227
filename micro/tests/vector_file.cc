#include "vector_file.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace tpv {
namespace {

struct Token {
  std::string text;
  int line;
};

std::vector<Token> Tokenize(const std::string& text) {
  std::vector<Token> out;
  int line = 1;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      ++i;
    } else if (c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == ',') {
      ++i;
    } else {
      const size_t start = i;
      while (i < text.size() && !std::strchr(" \t\r\n#,", text[i])) ++i;
      out.push_back({text.substr(start, i - start), line});
    }
  }
  return out;
}

bool ParseInt(const std::string& s, int64_t* v) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *v = x;
  return true;
}

bool ParseDouble(const std::string& s, double* v) {
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0') return false;
  *v = x;
  return true;
}

bool ParseFloat(const std::string& s, float* v) {
  char* end = nullptr;
  errno = 0;
  const float x = std::strtof(s.c_str(), &end);  // exact for the 9-significant-digit form (round trip)
  if (end == s.c_str() || *end != '\0') return false;
  *v = x;
  return true;
}

}  // namespace

bool Parse(const std::string& text, std::vector<Case>* cases, std::string* error) {
  const std::vector<Token> t = Tokenize(text);
  size_t p = 0;
  auto fail = [&](const std::string& what) {
    std::ostringstream os;
    os << "line " << (p < t.size() ? t[p].line : (t.empty() ? 0 : t.back().line)) << ": " << what;
    *error = os.str();
    return false;
  };
  if (t.size() < 2 || t[0].text != "tpv" || t[1].text != "1") return fail("file must start with 'tpv 1'");
  p = 2;
  while (p < t.size()) {
    if (t[p].text != "case") return fail("expected 'case', got '" + t[p].text + "'");
    if (p + 2 >= t.size()) return fail("'case' needs a name and a kernel");
    Case c;
    c.name = t[p + 1].text;
    c.kernel = t[p + 2].text;
    p += 3;
    for (;;) {
      if (p >= t.size()) return fail("case '" + c.name + "' has no 'end'");
      if (t[p].text == "end") {
        ++p;
        break;
      }
      const std::string type = t[p].text;
      if (type != "i32" && type != "f32" && type != "f64") return fail("unknown type '" + type + "'");
      if (p + 2 >= t.size()) return fail("array needs a name and a count");
      const std::string name = t[p + 1].text;
      int64_t count = 0;
      if (!ParseInt(t[p + 2].text, &count) || count < 0 || count > (int64_t{1} << 28)) {
        ++p;
        return fail("bad count for array '" + name + "'");
      }
      if (c.arrays.count(name)) return fail("duplicate array '" + name + "'");
      p += 3;
      if (p + static_cast<size_t>(count) > t.size()) return fail("array '" + name + "' is truncated");
      Array a;
      a.type = type;
      for (int64_t i = 0; i < count; ++i, ++p) {
        const std::string& s = t[p].text;
        bool ok;
        if (type == "i32") {
          int64_t v = 0;
          ok = ParseInt(s, &v) && v >= INT32_MIN && v <= INT32_MAX;
          a.i32.push_back(static_cast<int32_t>(v));
        } else if (type == "f32") {
          float v = 0;
          ok = ParseFloat(s, &v);
          a.f32.push_back(v);
        } else {
          double v = 0;
          ok = ParseDouble(s, &v);
          a.f64.push_back(v);
        }
        if (!ok) return fail("bad " + type + " value '" + s + "' in array '" + name + "'");
      }
      c.arrays.emplace(name, std::move(a));
    }
    cases->push_back(std::move(c));
  }
  return true;
}

bool ParseFile(const std::string& path, std::vector<Case>* cases, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "cannot open " + path;
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (!Parse(ss.str(), cases, error)) {
    *error = path + ": " + *error;
    return false;
  }
  return true;
}

}  // namespace tpv
