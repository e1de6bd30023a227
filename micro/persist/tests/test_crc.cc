// CRC32 (IEEE 802.3, reflected, poly 0xEDB88320): published check values, streaming, table vs bitwise.
#include "common.h"

namespace {

using tinyprop::Crc32;
using tinyprop::Crc32Bitwise;

uint32_t CrcOf(const std::string& s) { return Crc32(0, s.data(), s.size()); }

TP_TEST(crc_known_vectors) {
  TP_CHECK_EQ(CrcOf("123456789"), 0xCBF43926u);  // the standard CRC-32 check value
  TP_CHECK_EQ(CrcOf(""), 0x00000000u);
  TP_CHECK_EQ(CrcOf("a"), 0xE8B7BE43u);
  TP_CHECK_EQ(CrcOf("abc"), 0x352441C2u);
  TP_CHECK_EQ(CrcOf("The quick brown fox jumps over the lazy dog"), 0x414FA339u);
  const tpt::Bytes zeros(32, 0x00), ones(32, 0xFF);
  TP_CHECK_EQ(Crc32(0, zeros.data(), zeros.size()), 0x190A55ADu);
  TP_CHECK_EQ(Crc32(0, ones.data(), ones.size()), 0xFF6CAB0Bu);
  tpt::Bytes ramp(256);
  for (int i = 0; i < 256; ++i) ramp[i] = static_cast<uint8_t>(i);
  TP_CHECK_EQ(Crc32(0, ramp.data(), ramp.size()), 0x29058C73u);
  // The constexpr bitwise reference agrees (it is also static_assert-ed in persist.h).
  static_assert(Crc32Bitwise(0, "The quick brown fox jumps over the lazy dog", 43) == 0x414FA339u, "bitwise");
  TP_CHECK_EQ(Crc32Bitwise(0, "123456789", 9), 0xCBF43926u);
}

TP_TEST(crc_streaming_equals_one_shot) {
  const std::string s = "The quick brown fox jumps over the lazy dog";
  const uint32_t whole = CrcOf(s);
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    const uint32_t a = Crc32(0, s.data(), cut);
    TP_CHECK_EQ(Crc32(a, s.data() + cut, s.size() - cut), whole);
  }
  // three pieces
  const uint32_t a = Crc32(0, s.data(), 5);
  const uint32_t b = Crc32(a, s.data() + 5, 17);
  TP_CHECK_EQ(Crc32(b, s.data() + 22, s.size() - 22), whole);
}

TP_TEST(crc_table_matches_bitwise_on_random_data) {
  tpt::Rng rng(42);
  for (int trial = 0; trial < 300; ++trial) {
    tpt::Bytes d(rng.Below(600));
    for (auto& x : d) x = static_cast<uint8_t>(rng.Next());
    const uint32_t seed = trial % 3 == 0 ? 0u : rng.Next();
    TP_CHECK_EQ(Crc32(seed, d.data(), d.size()),
                Crc32Bitwise(seed, reinterpret_cast<const char*>(d.data()), d.size()));
  }
}

TP_TEST(crc_null_data_is_a_no_op) {
  TP_CHECK_EQ(Crc32(0x12345678u, nullptr, 10), 0x12345678u);
  TP_CHECK_EQ(Crc32(0u, nullptr, 0), 0u);
}

TP_TEST(crc_detects_every_single_bit_flip_of_a_header) {
  tpt::Bytes h = tpt::EncodeHeader(7, tpt::MakePayload(100, 1), {3, 4});
  const uint32_t good = Crc32(0, h.data(), 28);
  int undetected = 0;
  for (int bit = 0; bit < 28 * 8; ++bit) {
    h[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    undetected += Crc32(0, h.data(), 28) == good;
    h[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
  TP_CHECK_EQ(undetected, 0);
}

}  // namespace
