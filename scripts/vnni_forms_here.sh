#!/usr/bin/env bash
# Prints the TURBOKV_VNNI_FORMS value (CMakeLists.txt) for a test build on this machine: ON where
# the CPU runs AVX-VNNI or AVX-512 VNNI (or where /proc/cpuinfo cannot tell), OFF where it runs
# neither, so that the sanitizer and plain test builds do not compile two thirds of the AVX2
# integer kernels' code only for no test here to run it.
if [ -r /proc/cpuinfo ] && grep -q '^flags' /proc/cpuinfo && ! grep -qwE 'avx_vnni|avx512_vnni' /proc/cpuinfo; then
  echo OFF
else
  echo ON
fi
