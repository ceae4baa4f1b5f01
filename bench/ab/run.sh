#!/usr/bin/env bash
# A/B of two commits of the C++ core in one process (see main.cpp for why):
#   bash bench/ab/run.sh BASE [HEAD] -- encode 8 64 20000
#   bash bench/ab/run.sh HEAD~1 -- attention 4 4 32768 40
# BASE, HEAD: git revisions, or folders holding a cpp/ tree (e.g. from git archive, where no .git
# is at hand); HEAD omitted: the working tree. Each side's cpp/src is compiled with
# the flags of the CMake Release build into build/ab/<side>/ with its namespace renamed, then both
# are linked into build/ab/ab, which runs the arguments after "--". AB_HEAD_FLAGS adds compiler
# flags to the head side only, e.g. AB_HEAD_FLAGS=-DTURBOKV_AVX2_EVEX_VNNI (kernels.hpp: on an
# AVX-512 VNNI host the head's AVX2 level then runs what an AVX-VNNI machine's does).
# AB_FLAGS adds compiler flags to both sides, e.g. AB_FLAGS=-DTURBOKV_AVX2_PLAIN (kernels.hpp: the
# AVX2 level then runs its plain form, as AMD Zen 1-4 do, on a host with AVX-VNNI).
# AB_LAYERS=12 before the command: attention over 12 caches per side in turn, read from memory as
# a model's decode reads them (main.cpp). Attention lines print the min and the median call of each side:
# the median shows a late claim or a slow thread that the fastest call hides.
# AB_BOTH=1 before the command: also a second binary with the sides' roles swapped (the head's code
# in the base's place), run right after, and the two orders' geometric mean of head/base printed:
# the same code on both sides read head/base 0.87-0.97 on the 2-core VM (main.cpp, alternate), a
# bias that one order alone takes for a gain.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=$1; shift
head=""
if [[ $# -gt 0 && $1 != "--" ]]; then head=$1; shift; fi
[[ $# -gt 0 && $1 == "--" ]] || { echo "usage: bash bench/ab/run.sh BASE [HEAD] -- encode|attention ARGS" >&2; exit 2; }
shift
out=$root/build/ab
eigen=$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)
flags="-O3 -DNDEBUG -std=c++17 -ffp-contract=off -fPIC ${AB_FLAGS:-}"

build_side() {  # build_side OUT NAME REVISION ("" for the working tree) [EXTRA_FLAGS]
  local out=$1; shift
  local name=$1 rev=$2 extra=${3:-} src=$out/$1/src
  rm -rf "$out/$name" && mkdir -p "$src" "$out/$name/obj"
  if [[ -z $rev ]]; then
    cp -r "$root/cpp" "$src/"
  elif [[ -d $rev/cpp ]]; then
    cp -r "$rev/cpp" "$src/"
  else
    git -C "$root" archive "$rev" cpp | tar -x -C "$src"
  fi
  local f
  for f in "$src"/cpp/src/*.cpp "$root/bench/ab/side.cpp"; do
    g++ $flags $extra -Dturbokv=$name -DAB_SIDE=${name}_ $eigen -I"$src/cpp/src" -I"$src/cpp/include" \
      -c "$f" -o "$out/$name/obj/$(basename "$f" .cpp).o" &
  done
  wait
  ar rcs "$out/$name/lib.a" "$out/$name"/obj/*.o
}

build_side "$out" ab_base "$base"
build_side "$out" ab_head "$head" "${AB_HEAD_FLAGS:-}"
g++ -O2 -std=c++17 "$root/bench/ab/main.cpp" "$out/ab_base/lib.a" "$out/ab_head/lib.a" -lpthread -o "$out/ab"
describe() { if [[ -d $1/cpp ]]; then echo "folder $1"; else echo "$1 ($(git -C "$root" rev-parse --short "$1"))"; fi; }
echo "base: $(describe "$base"); head: ${head:+$(describe "$head")}${head:-working tree}${AB_HEAD_FLAGS:+ with $AB_HEAD_FLAGS}; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
if [[ -z ${AB_BOTH:-} ]]; then
  "$out/ab" "$@"
  exit
fi
swapped=$out/swapped
mkdir -p "$swapped"
build_side "$swapped" ab_base "$head" "${AB_HEAD_FLAGS:-}"
build_side "$swapped" ab_head "$base"
g++ -O2 -std=c++17 "$root/bench/ab/main.cpp" "$swapped/ab_base/lib.a" "$swapped/ab_head/lib.a" -lpthread -o "$swapped/ab"
first=$("$out/ab" "$@" | tail -1)
second=$("$swapped/ab" "$@" | tail -1)
echo "order 1 (head's code as head): $first"
echo "order 2 (head's code as base): $second"
# head/base of order 1 over head/base of order 2 (old/new there), square-rooted: new/old with the
# sides' bias cancelled; for attention lines the fastest calls', then the medians'.
python3 - "$first" "$second" <<'PY'
import re, sys
one, two = (list(map(float, re.findall(r"head/base ([0-9.]+)", line))) for line in sys.argv[1:3])
both = [(a / b) ** 0.5 for a, b in zip(one, two)]
print("both orders, new/old:", ", ".join(f"{x:.3f}" for x in both), "(fastest calls, then medians)" if len(both) > 1 else "")
PY
