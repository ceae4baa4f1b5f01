// Whether gathers count as slow: AMD Zen 1-4, Linux's report of Intel's Gather Data Sampling
// microcode mitigation, and the TURBOKV_GATHERS override (gather_speed.hpp).
#include <gtest/gtest.h>

#include <iostream>
#include <string>

#include "../../cpp/src/gather_speed.hpp"
#include "../../cpp/src/kernels.hpp"
#if TURBOKV_X86
#include "../../cpp/src/avx2_helpers.hpp"
#endif

namespace turbokv {
namespace kernels {
namespace {

// The texts Linux's sysfs file takes (Documentation/admin-guide/hw-vuln/gather_data_sampling.rst).
TEST(GatherSpeed, TheMicrocodeMitigationOrAnUnknownHostMeansSlowGathers) {
  EXPECT_TRUE(gds_status_slows_gathers("Mitigation: Microcode"));
  EXPECT_TRUE(gds_status_slows_gathers("Mitigation: Microcode (locked)"));
  EXPECT_TRUE(gds_status_slows_gathers("Unknown: Dependent on hypervisor status"));
  EXPECT_FALSE(gds_status_slows_gathers("Not affected"));
  EXPECT_FALSE(gds_status_slows_gathers("Vulnerable"));
  EXPECT_FALSE(gds_status_slows_gathers("Vulnerable: No microcode"));
  EXPECT_FALSE(gds_status_slows_gathers("Mitigation: AVX disabled, no microcode"));
  EXPECT_FALSE(gds_status_slows_gathers(""));
}

TEST(GatherSpeed, ZenOrTheMitigationSlowsGathersUnlessTheEnvironmentSays) {
  const std::string intel_fast = "Not affected", mitigated = "Mitigation: Microcode";
  for (int zen = 0; zen <= 5; ++zen) {
    const bool zen_slow = zen >= 1 && zen <= 4;
    for (const char* env : {static_cast<const char*>(nullptr), "", "auto"}) {
      const GatherSpeed plain = gather_speed(zen, env, intel_fast);
      EXPECT_EQ(plain.slow, zen_slow) << zen;
      EXPECT_FALSE(plain.gds_mitigation);
      EXPECT_TRUE(plain.error.empty());
      const GatherSpeed gds = gather_speed(zen, env, mitigated);
      EXPECT_TRUE(gds.slow) << zen;
      EXPECT_TRUE(gds.gds_mitigation);
    }
    EXPECT_FALSE(gather_speed(zen, "fast", mitigated).slow) << zen;
    EXPECT_TRUE(gather_speed(zen, "fast", mitigated).gds_mitigation) << "the fact stays reported";
    EXPECT_TRUE(gather_speed(zen, "slow", intel_fast).slow) << zen;
  }
}

TEST(GatherSpeed, AnOverrideItCannotTakeIsAnErrorNamingTheChoices) {
  for (const char* env : {"Fast", "SLOW", "gathers", "1", " fast"}) {
    const GatherSpeed speed = gather_speed(0, env, "Not affected");
    EXPECT_NE(speed.error.find(std::string("TURBOKV_GATHERS='") + env + "'"), std::string::npos) << speed.error;
    EXPECT_NE(speed.error.find("auto, fast, slow"), std::string::npos) << speed.error;
  }
}

#if TURBOKV_X86
// What this process decided: the routes report the same flag the kernels read.
TEST(GatherSpeed, TheRoutesReportTheFlagTheKernelsRead) {
  const KernelRoutes routes = kernel_routes();
  EXPECT_EQ(routes.gathers_slow, kGathersAreSlow);
  EXPECT_EQ(routes.gds_mitigation, gds_status_slows_gathers(read_gds_status()));
  std::cout << "gathers here: " << (kGathersAreSlow ? "slow" : "fast") << " (GDS: '" << read_gds_status() << "')\n";
}
#endif

}  // namespace
}  // namespace kernels
}  // namespace turbokv
