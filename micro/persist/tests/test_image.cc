// Flash images exchanged with tests/test_persist.py, which parses and builds them with its own code (Python's
// zlib.crc32, struct): --write-image PATH saves three records and writes the raw flash; --load-image PATH loads a
// raw flash image and prints what LoadWeights reports. Both use the geometry printed on the "geometry" line.
#include <fstream>

#include "common.h"

namespace {

using namespace tpt;

constexpr uint32_t kImageSize = 4096, kImageSector = 256, kImageWriteBlock = 4;
const PersistLayout kImageLayout{{0, 2048}, 2048};

std::string Arg(const char* name) {
  const auto& a = Ctx().args;
  for (size_t i = 0; i + 1 < a.size(); i += 2) {
    if (a[i] == name) return a[i + 1];
  }
  return "";
}

void PrintGeometry() {
  std::cout << "geometry size=" << kImageSize << " sector=" << kImageSector << " write_block=" << kImageWriteBlock
            << " slot0=" << kImageLayout.slot_offset[0] << " slot1=" << kImageLayout.slot_offset[1]
            << " slot_size=" << kImageLayout.slot_size << "\n";
}

std::vector<float> Weights(int n, float a, float b) {
  std::vector<float> w(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) w[static_cast<size_t>(i)] = a * static_cast<float>(i) + b;
  return w;
}

TP_TEST(image_write) {
  const std::string path = Arg("--write-image");
  if (path.empty()) return;  // only with --write-image
  Bytes storage(kImageSize);
  Bytes flags(kImageSize / kImageWriteBlock);
  SimFlash strict({kImageSize, kImageSector, kImageWriteBlock, true, false}, storage.data(), flags.data());
  // Records: generation 1 (slot 0, then overwritten), 2 (slot 1), 3 (slot 0).
  const std::vector<float> w1 = Weights(50, 0.25f, -3.0f), w2 = Weights(70, -0.5f, 0.0f), w3 = Weights(10, 1.0f, 1.5f);
  const RecordMeta m1{0xC0FFEEu, 100}, m2{0xC0FFEEu, 200}, m3{0xC0FFEEu, 300};
  TP_CHECK_EQ(tinyprop::SaveWeights(strict, kImageLayout, w1.data(), 200, &m1, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(tinyprop::SaveWeights(strict, kImageLayout, w2.data(), 280, &m2, nullptr), PersistStatus::kOk);
  TP_CHECK_EQ(tinyprop::SaveWeights(strict, kImageLayout, w3.data(), 40, &m3, nullptr), PersistStatus::kOk);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(storage.data()), static_cast<std::streamsize>(storage.size()));
  TP_CHECK(out.good());
  PrintGeometry();
}

TP_TEST(image_load) {
  const std::string path = Arg("--load-image");
  if (path.empty()) return;  // only with --load-image
  Bytes storage(kImageSize);
  SimFlash flash({kImageSize, kImageSector, kImageWriteBlock, false, false}, storage.data(), nullptr);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(flash.mutable_data()), kImageSize);
  TP_CHECK(in.gcount() == static_cast<std::streamsize>(kImageSize));
  Bytes buf(kImageLayout.slot_size, 0xEE);
  LoadReport r{};
  const PersistStatus st =
      tinyprop::LoadWeights(flash, kImageLayout, buf.data(), static_cast<uint32_t>(buf.size()), &r);
  bool untouched = true;
  for (uint8_t b : buf) untouched = untouched && b == 0xEE;
  const uint32_t crc = st == PersistStatus::kOk ? tinyprop::Crc32(0, buf.data(), r.size) : 0u;
  PrintGeometry();
  std::cout << "loaded status=" << tinyprop::PersistStatusName(st) << " slot=" << r.slot
            << " generation=" << r.generation << " size=" << r.size << " model_id=" << r.meta.model_id
            << " step=" << r.meta.step << " other_valid=" << r.other_slot_valid
            << " state0=" << r.slots[0].state << " state1=" << r.slots[1].state << " payload_crc=" << crc
            << " buffer_untouched=" << untouched << "\n";
}

}  // namespace
