// Reader of the golden test-vector format (".tpv", text; see tests/golden/README.md).
#ifndef TINYPROP_TESTS_VECTOR_FILE_H_
#define TINYPROP_TESTS_VECTOR_FILE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tpv {

struct Array {
  std::string type;  // "i32", "f32" or "f64"
  std::vector<int32_t> i32;
  std::vector<float> f32;
  std::vector<double> f64;
  size_t size() const { return type == "i32" ? i32.size() : type == "f32" ? f32.size() : f64.size(); }
};

struct Case {
  std::string name;
  std::string kernel;
  std::map<std::string, Array> arrays;
  const Array* Find(const std::string& array_name, const std::string& type) const {
    auto it = arrays.find(array_name);
    return (it != arrays.end() && it->second.type == type) ? &it->second : nullptr;
  }
};

// Parses `text`; on error returns false with a message naming the line.
bool Parse(const std::string& text, std::vector<Case>* cases, std::string* error);
bool ParseFile(const std::string& path, std::vector<Case>* cases, std::string* error);

}  // namespace tpv

#endif  // TINYPROP_TESTS_VECTOR_FILE_H_
