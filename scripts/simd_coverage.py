"""What this CPU lets the test suite execute, and which kernels it cannot reach here.

    python3 scripts/simd_coverage.py

The GoogleTest and pytest suites run every kernel at every SIMD level the CPU supports and both
routes of each AMD Zen workaround (gathers or scalar loads, pdep or SIMD unpacking, vpermps or
byte planes) on any AVX2 machine, and the AVX2 level's AVX-VNNI code on AVX-512 VNNI machines too
(EVEX-encoded). Kernels for instruction sets the CPU lacks cannot run here, and no emulator at hand
runs them: qemu-user's TCG executes neither AVX-VNNI nor AVX-512 (checked with QEMU 7.2, Debian
bookworm, and 10.0, bookworm-backports). scripts/test.sh prints this report first, so that every
test log says what it covered.
"""

from typing import List

import turbokv
from turbokv.eval.benchmarks import machine_text


def unreached_kernels() -> List[str]:
    """The kernel families of this build that this CPU cannot execute, one line each."""
    levels = turbokv.supported_simd()
    routes = turbokv.kernel_routes()
    missing = []
    if "avx2" not in levels and "neon" not in levels:
        missing.append("AVX2 level")
    # Without AVX-VNNI, the AVX-512 level's VL + VNNI run the same code EVEX-encoded (VnniForm).
    evex_vnni = "avx512" in levels and routes["avx512_vnni"]
    if "avx2" in levels and not routes["avx_vnni"] and not evex_vnni:
        missing.append("AVX-VNNI variants of the AVX2 int8 score, int8 value and int16 score kernels "
                       "(256-bit vpdpbusd/vpdpwssd: Intel Alder Lake and later, AMD Zen 5)")
    if "avx2" in levels and "avx512" not in levels:
        missing.append("AVX-512 level (rotations, norms, quantisation; float32, int8 and int16 scores; "
                       "float32 values; softmax rows; float16 rows)")
    if "avx512" in levels and not routes["avx512_vnni"]:
        missing.append("AVX-512 VNNI kernels (int8 scores and values by 512-bit vpdpbusd)")
    if "avx512" in levels and not routes["avx512_vbmi"]:
        missing.append("AVX-512 VBMI kernels (vpermb byte planes, 3-bit and 5-8-bit rows)")
    return missing


def main() -> None:
    print(f"This CPU: {machine_text()}")
    levels = turbokv.supported_simd()
    print(f"SIMD levels the tests run natively: {', '.join(levels)}")
    if "neon" not in levels:
        print("NEON level: cross-compiled and run under qemu-aarch64 (scripts/test_arm.sh)")
    routes = turbokv.kernel_routes()
    if "avx2" in levels and not routes["avx_vnni"] and "avx512" in levels and routes["avx512_vnni"]:
        print("AVX-VNNI variants of the AVX2 integer kernels: run in their EVEX form (AVX-512 VL + VNNI: "
              "the same code, another encoding)")
    missing = unreached_kernels()
    if missing:
        print("Not executed on this CPU (compiled, never run here):")
        for line in missing:
            print(f"  - {line}")
    else:
        print("Every kernel family this build compiles for this CPU runs here.")


if __name__ == "__main__":
    main()
