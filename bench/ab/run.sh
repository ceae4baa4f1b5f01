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
# AB_LAYERS=12 before the command: attention over 12 caches per side in turn, read from memory as
# a model's decode reads them (main.cpp). Attention lines print the min and the median call of each side:
# the median shows a late claim or a slow thread that the fastest call hides.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
base=$1; shift
head=""
if [[ $# -gt 0 && $1 != "--" ]]; then head=$1; shift; fi
[[ $# -gt 0 && $1 == "--" ]] || { echo "usage: bash bench/ab/run.sh BASE [HEAD] -- encode|attention ARGS" >&2; exit 2; }
shift
out=$root/build/ab
eigen=$(pkg-config --cflags eigen3 2>/dev/null || echo -I/usr/include/eigen3)
flags="-O3 -DNDEBUG -std=c++17 -ffp-contract=off -fPIC"

build_side() {  # build_side NAME REVISION ("" for the working tree) [EXTRA_FLAGS]
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

build_side ab_base "$base"
build_side ab_head "$head" "${AB_HEAD_FLAGS:-}"
g++ -O2 -std=c++17 "$root/bench/ab/main.cpp" "$out/ab_base/lib.a" "$out/ab_head/lib.a" -lpthread -o "$out/ab"
describe() { if [[ -d $1/cpp ]]; then echo "folder $1"; else echo "$1 ($(git -C "$root" rev-parse --short "$1"))"; fi; }
echo "base: $(describe "$base"); head: ${head:+$(describe "$head")}${head:-working tree}${AB_HEAD_FLAGS:+ with $AB_HEAD_FLAGS}; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
"$out/ab" "$@"
