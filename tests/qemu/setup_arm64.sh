#!/usr/bin/env bash
# An aarch64 Python 3.11 with numpy, numba, llvmlite (PyPI's aarch64 manylinux wheels) and kvant's other
# dependencies, run under QEMU user-mode emulation (tests/qemu/python_arm64.sh), so that the numba kernels can be
# compiled for and run as AArch64 code (sdot, usdot) on an x86_64 Debian 12 machine.
#
# Everything goes under $KVANT_ARM64_ROOT (default ~/.cache/kvant-arm64):
#   sysroot/  the arm64 .debs of python3.11-minimal + libpython3.11-stdlib (+ libstdc++6) and their dependencies,
#             unpacked with dpkg-deb -x; resolved by a private apt configuration (apt/) whose only architecture is
#             arm64, so the host's dpkg/apt state is not touched (no dpkg --add-architecture)
#   site/     the aarch64 wheels, pip install --target (seen through a .pth in the sysroot's dist-packages)
#   wheels/   pip's downloads (kept, so a re-install is offline)
# Needs root only to apt-get install qemu-user-static when no qemu-aarch64 is on PATH. binfmt_misc is not used:
# the runner calls qemu-aarch64 -L sysroot explicitly. Idempotent: stamps skip the steps already done.
#
# Versions: numpy/numba/llvmlite/... are pinned to the ones installed in the host Python that has numba
# ($KVANT_ARM64_HOST_PYTHON, else the active venv, else python3/python on PATH), all its other packages are
# used as pip constraints; with no such Python the newest aarch64 wheels are taken.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

ROOT=${KVANT_ARM64_ROOT:-$HOME/.cache/kvant-arm64}
MIRROR=${KVANT_ARM64_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${KVANT_ARM64_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
SUITE=bookworm
DEBS="python3.11-minimal libpython3.11-stdlib libstdc++6 libgcc-s1 zlib1g"
# what kvant needs to import and test (pyproject.toml dependencies + test extra)
PYPKGS="numpy numba llvmlite gguf sentencepiece protobuf tokenizers safetensors click jinja2 tqdm starlette uvicorn
pytest httpx"
PLAT=(--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64
      --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp --abi cp311 --abi abi3
      --abi none --only-binary=:all:)
SYSROOT=$ROOT/sysroot SITE=$ROOT/site
log() { echo "[setup_arm64] $*" >&2; }
quiet_pip() { grep -v -e 'is ignored: it is neither a file nor a directory' >&2 || true; }
mkdir -p "$ROOT"

# 1. qemu-aarch64 (static build: needs no arm64 libraries of the host)
if ! command -v qemu-aarch64-static >/dev/null && ! command -v qemu-aarch64 >/dev/null; then
    log "installing qemu-user-static"
    apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null; }
fi
QEMU=$(command -v qemu-aarch64-static || command -v qemu-aarch64)

# 2. the arm64 sysroot with Debian's python3.11
SYS_KEY="$SUITE $MIRROR $SECURITY $DEBS"
if [ "$(cat "$ROOT/.sysroot.ok" 2>/dev/null)" != "$SYS_KEY" ]; then
    log "building the arm64 sysroot from Debian $SUITE arm64 packages"
    A=$ROOT/apt
    rm -rf "$A" && mkdir -p "$A/etc/apt.conf.d" "$A/etc/preferences.d" "$A/state/lists/partial" \
        "$A/cache/archives/partial"
    : > "$A/status"
    KEY=/usr/share/keyrings/debian-archive-keyring.gpg
    { echo "deb [arch=arm64 signed-by=$KEY] $MIRROR $SUITE main"
      echo "deb [arch=arm64 signed-by=$KEY] $MIRROR $SUITE-updates main"
      echo "deb [arch=arm64 signed-by=$KEY] $SECURITY $SUITE-security main"; } > "$A/etc/sources.list"
    cat > "$A/apt.conf" <<CONF
Dir "$A/";
Dir::Etc "etc/";
Dir::Etc::sourceparts "-";
Dir::State "state/";
Dir::State::status "$A/status";
Dir::Cache "cache/";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Install-Recommends "false";
APT::Sandbox::User "root";
Acquire::Languages "none";
CONF
    export APT_CONFIG=$A/apt.conf
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    apt-get install -y -q --download-only $DEBS >/dev/null
    unset APT_CONFIG
    rm -rf "$SYSROOT.tmp" && mkdir -p "$SYSROOT.tmp"
    for deb in "$A"/cache/archives/*.deb; do dpkg-deb -x "$deb" "$SYSROOT.tmp"; done
    rm -rf "$A/cache/archives"/*.deb "$A/cache"/*.bin "$A/state/lists" "$SYSROOT"
    mv "$SYSROOT.tmp" "$SYSROOT"
    ln -sf python3.11 "$SYSROOT/usr/bin/python3"
    rm -f "$ROOT/.site.ok"          # the .pth below lives in the sysroot
    "$QEMU" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" -c 'import ctypes, ssl, sqlite3, lzma, bz2, zlib' \
        || { log "the emulated python3.11 does not start"; exit 1; }
    echo "$SYS_KEY" > "$ROOT/.sysroot.ok"
fi

# 3. the aarch64 wheels
HOSTPY=""
for py in "${KVANT_ARM64_HOST_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" python3 python; do
    if [ -n "$py" ] && "$py" -c 'from importlib.metadata import version; version("numba")' >/dev/null 2>&1; then HOSTPY=$py; break; fi
done
PIPPY=${HOSTPY:-python3}
REQS=() CONSTRAINTS=$ROOT/constraints.txt
if [ -n "$HOSTPY" ]; then
    # shellcheck disable=SC2086
    mapfile -t REQS < <("$HOSTPY" - $PYPKGS <<'PY'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(name)
PY
)
    "$HOSTPY" - > "$CONSTRAINTS" <<'PY'
import re
from importlib import metadata
seen = set()
for d in metadata.distributions():
    name, version = d.metadata["Name"], d.version
    if not name or name.lower() in seen or name.lower() in ("kvant", "pip", "setuptools", "wheel"):
        continue
    if re.fullmatch(r"[0-9][0-9A-Za-z.!+-]*", version) and "+" not in version:
        seen.add(name.lower())
        print(f"{name}=={version}")
PY
else
    read -r -a REQS <<< "$(echo $PYPKGS)"
    : > "$CONSTRAINTS"
fi
SITE_KEY="${REQS[*]} $(md5sum < "$CONSTRAINTS" | cut -c1-12) $SYSROOT"
if [ "$(cat "$ROOT/.site.ok" 2>/dev/null)" != "$SITE_KEY" ] || [ ! -d "$SITE" ]; then
    "$PIPPY" -m pip --version >/dev/null || { log "$PIPPY has no pip"; exit 1; }
    log "downloading aarch64 wheels with $PIPPY: ${REQS[*]}"
    if ! "$PIPPY" -m pip download -q -d "$ROOT/wheels" "${PLAT[@]}" -c "$CONSTRAINTS" "${REQS[@]}" 2> >(quiet_pip); then
        log "retrying without the host's other versions as constraints"
        : > "$CONSTRAINTS"
        "$PIPPY" -m pip download -q -d "$ROOT/wheels" "${PLAT[@]}" "${REQS[@]}" 2> >(quiet_pip)
    fi
    rm -rf "$SITE.tmp"
    "$PIPPY" -m pip install -q --no-index --find-links "$ROOT/wheels" --target "$SITE.tmp" "${PLAT[@]}" \
        -c "$CONSTRAINTS" "${REQS[@]}" 2> >(quiet_pip)
    rm -rf "$SITE" && mv "$SITE.tmp" "$SITE"
    # the sysroot's python adds <prefix>/lib/python3/dist-packages as a site dir; its .pth adds site/
    mkdir -p "$SYSROOT/usr/lib/python3/dist-packages"
    cat > "$SYSROOT/usr/lib/python3/dist-packages/kvant-arm64.pth" <<PTH
$SITE
import os, sys; sys.executable = os.environ.get("KVANT_ARM64_EXECUTABLE") or sys.executable
PTH
    "$QEMU" -cpu max -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" -s -c 'import platform, numpy, numba, llvmlite
import gguf, pytest, tokenizers, sentencepiece, safetensors
print("[setup_arm64] ok:", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__,
      "numba", numba.__version__, "llvmlite", llvmlite.__version__)' >&2
    echo "$SITE_KEY" > "$ROOT/.site.ok"
fi
log "ready: tests/qemu/python_arm64.sh (root $ROOT)"
