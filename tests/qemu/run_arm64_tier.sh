#!/usr/bin/env bash
# The ARM tier: kvant's kernel tests run as AArch64 code under QEMU user-mode emulation, on each AArch64 kernel
# path (i8mm: usdot; dotprod: sdot), forced through the CPU features numba compiles for. Not part of .ci/run: with
# an empty numba cache a path takes about 20 minutes (every kernel compiled by an emulated LLVM).
#   tests/qemu/run_arm64_tier.sh [PATH ...] [-- PYTEST ARGS]      (default: i8mm dotprod, tests/runtime/test_kernels.py
#                                                                  and tests/runtime/test_prefill.py)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
declare -A FEATURES=([i8mm]="+neon,+dotprod,+i8mm" [dotprod]="+neon,+dotprod")
paths=() tests=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; tests=("$@"); break; fi
    paths+=("$1"); shift
done
[ ${#paths[@]} -gt 0 ] || paths=(i8mm dotprod)
[ ${#tests[@]} -gt 0 ] || tests=(tests/runtime/test_kernels.py tests/runtime/test_prefill.py -q)
"$HERE/setup_arm64.sh"
cd "$REPO"
status=0
for path in "${paths[@]}"; do
    [ -n "${FEATURES[$path]:-}" ] || { echo "run_arm64_tier.sh: no AArch64 path $path (i8mm, dotprod)" >&2; exit 2; }
    echo "== AArch64 path $path (NUMBA_CPU_FEATURES=${FEATURES[$path]})"
    NUMBA_CPU_NAME=generic NUMBA_CPU_FEATURES=${FEATURES[$path]} KVANT_CPU_PATH=$path \
        "$HERE/python_arm64.sh" -m pytest -p no:cacheprovider "${tests[@]}" || status=1
done
exit $status
