#!/usr/bin/env bash
# Makes DIR an arm64 Debian root with Python 3 and NumPy, so that an x86_64 Linux host can import the
# aarch64 wheel under qemu's user-mode emulation (tests/test_packaging.py does, with .ci/run):
#
#   bash scripts/arm64_python.sh target/arm64-root
#   PYTHONPATH=unpacked-wheel qemu-aarch64-static -L target/arm64-root target/arm64-root/usr/bin/python3 tests/wheel_smoke.py
#
# Debian's packages only: qemu-user-static and debootstrap, installed with apt-get when missing (root).
# debootstrap's first stage downloads the packages and unpacks the base system; its second stage
# would run every package's scripts under emulation (minutes, and it needs binfmt_misc), so the
# remaining packages are unpacked with dpkg-deb instead, and the one link their scripts would have
# made that Python needs (NumPy's BLAS/LAPACK, chosen by update-alternatives) is made by hand.
# About 1 minute and 240 MB; a second run with the same DIR does nothing.
set -euo pipefail
root=${1:?usage: arm64_python.sh DIR}
[ -f "$root/.alignfw-arm64-ready" ] && exit 0

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    log=$(mktemp)
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >"$log" 2>&1 \
        || { cat "$log"; exit 1; }
    rm -f "$log"
fi

suite=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
rm -rf "$root"
# No mirror argument: debootstrap's default Debian mirror.
debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-numpy "$suite" "$root" >/dev/null
for deb in "$root"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$root"
done
lib=$root/usr/lib/aarch64-linux-gnu
ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
qemu-aarch64-static -L "$root" "$root/usr/bin/python3" -c "import numpy, platform; assert platform.machine() == 'aarch64'"
touch "$root/.alignfw-arm64-ready"
echo "arm64 Python ready in $root"
