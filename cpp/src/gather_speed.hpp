// Internal: whether this CPU's vgather instructions are slow, so that the 5-8-bit lookups (and the
// AVX-512 encode's 6-8-bit grid lookups) take scalar loads instead (kGathersAreSlow).
//
// Two causes. AMD Zen 1-4 run gathers microcoded (measured here: kernel_choices_avx2.md, rounds
// 12-33). Intel cores affected by Gather Data Sampling (CVE-2022-40982, "Downfall": Skylake to
// Tiger Lake and Ice Lake, most AVX2 laptops and many cloud Xeons) slow every gather down once the
// microcode mitigation is on, which Linux applies by default since August 2023: Intel warns of a
// "significant" cost where gathers are in the hot path, and peers replaced them by scalar loads
// (samtools/htscodecs#96: "up to 3x slower", rten#204, numpy/x86-simd-sort#65). Linux names the
// state in sysfs, so no timing at start-up is needed. TURBOKV_GATHERS=fast|slow overrides both.
#pragma once

#include <fstream>
#include <string>

namespace turbokv {
namespace kernels {

// Why gathers count as slow or fast here; kernel_routes() reports it.
struct GatherSpeed {
  bool slow = false;
  bool gds_mitigation = false;  // Linux reports the GDS microcode mitigation (or cannot rule it out)
  std::string error;            // a TURBOKV_GATHERS value this cannot take; empty if none
};

// Whether Linux's /sys/devices/system/cpu/vulnerabilities/gather_data_sampling text means gathers
// run under the microcode mitigation: "Mitigation: Microcode" (or "... (locked)"), or a guest on an
// affected CPU that cannot see the host's state ("Unknown: Dependent on hypervisor status"; cloud
// hosts apply the microcode). "Not affected", "Vulnerable" (mitigation off, or no microcode),
// "Mitigation: AVX disabled, no microcode" (no AVX at all) and an unreadable file mean fast.
inline bool gds_status_slows_gathers(const std::string& status) {
  return status.rfind("Mitigation: Microcode", 0) == 0 ||
         status.rfind("Unknown: Dependent on hypervisor status", 0) == 0;
}

// The decision from its inputs (pure, for tests): `zen` from amd_zen_generation(), `env` the value
// of TURBOKV_GATHERS (nullptr if unset), `gds_status` the sysfs text ("" if unreadable).
inline GatherSpeed gather_speed(int zen, const char* env, const std::string& gds_status) {
  GatherSpeed speed;
  speed.gds_mitigation = gds_status_slows_gathers(gds_status);
  speed.slow = (zen >= 1 && zen <= 4) || speed.gds_mitigation;
  const std::string asked = env == nullptr ? "" : env;
  if (asked.empty() || asked == "auto") return speed;
  if (asked == "fast" || asked == "slow") {
    speed.slow = asked == "slow";
  } else {
    speed.error = "TURBOKV_GATHERS='" + asked + "': use one of auto, fast, slow";
  }
  return speed;
}

// This machine's sysfs text, first line without its newline; "" off Linux or where unreadable.
inline std::string read_gds_status() {
  std::ifstream in("/sys/devices/system/cpu/vulnerabilities/gather_data_sampling");
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return line;
}

}  // namespace kernels
}  // namespace turbokv
