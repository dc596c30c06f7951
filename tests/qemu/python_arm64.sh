#!/usr/bin/env bash
# Runs the aarch64 Python 3.11 that tests/qemu/setup_arm64.sh set up, under qemu-aarch64, with its arguments:
#   tests/qemu/python_arm64.sh -c 'import numba; print(numba.__version__)'
#   tests/qemu/python_arm64.sh -m pytest tests/runtime -q
# kvant is importable from this checkout ($KVANT_ARM64_ROOT/src/kvant links to its folders, like the editable
# install). LLVM sees no CPU features under qemu-user (/proc/cpuinfo is the x86 host's), so numba compiles for
# NUMBA_CPU_NAME/NUMBA_CPU_FEATURES, set here unless already set (KVANT_ARM64_FEATURES=+neon,+dotprod picks the
# sdot path); QEMU's CPU is KVANT_ARM64_CPU (default max: dotprod, i8mm, SVE2).
set -euo pipefail
ROOT=${KVANT_ARM64_ROOT:-$HOME/.cache/kvant-arm64}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SYSROOT=$ROOT/sysroot
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
if [ -z "$QEMU" ] || [ ! -f "$ROOT/.site.ok" ]; then
    echo "python_arm64.sh: run tests/qemu/setup_arm64.sh first" >&2; exit 1
fi
mkdir -p "$ROOT/src/kvant"
for p in formats convert runtime; do
    [ "$(readlink "$ROOT/src/kvant/$p" 2>/dev/null)" = "$REPO/$p" ] || ln -sfn "$REPO/$p" "$ROOT/src/kvant/$p"
done
unset PYTHONHOME
export PYTHONNOUSERSITE=1 PYTHONPATH="$ROOT/src${KVANT_ARM64_PYTHONPATH:+:$KVANT_ARM64_PYTHONPATH}"
export KVANT_ARM64_EXECUTABLE="$REPO/tests/qemu/python_arm64.sh"    # sys.executable: children run emulated too
export NUMBA_CPU_NAME=${NUMBA_CPU_NAME:-generic}
export NUMBA_CPU_FEATURES=${NUMBA_CPU_FEATURES:-${KVANT_ARM64_FEATURES:-+neon,+dotprod,+i8mm}}
export NUMBA_CACHE_DIR=${KVANT_ARM64_NUMBA_CACHE_DIR:-$ROOT/numba-cache}   # not the host's x86 cache
exec "$QEMU" -cpu "${KVANT_ARM64_CPU:-max}" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "$@"
