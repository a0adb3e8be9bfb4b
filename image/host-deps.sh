#!/usr/bin/env bash
# Installs what building and testing the image needs on a Debian bookworm host (root):
# mmdebstrap + binfmt for the arm64 rootfs, the aarch64 cross toolchain and Rust target,
# mtools/dosfstools/e2fsprogs for assembly without mounts, qemu for the boot test.
# qemu-system-arm and qemu-utils come from bookworm in one command: a backported qemu-utils
# would otherwise be removed silently and qemu-img go missing (NOTES §5 pitfall 1).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(mmdebstrap arch-test qemu-user-static binfmt-support qemu-system-arm qemu-system-data
      qemu-utils/bookworm ipxe-qemu mtools dosfstools fdisk e2fsprogs xz-utils python3 zstd
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross sip-tester)
need=0
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "${p%%/*}" 2>/dev/null | grep -q '^install ok installed' || need=1
done
if [ "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null)" != "$(dpkg-query -W -f='${Version}' qemu-system-arm 2>/dev/null)" ]; then
    need=1
fi
if [ $need = 1 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu >/dev/null
# binfmt: the F flag lets the chroot run arm64 binaries without qemu inside it.
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
arch-test arm64 >/dev/null || { echo "host-deps: arch-test arm64 failed (binfmt)" >&2; exit 1; }
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || { echo "host-deps: binfmt qemu-aarch64 lacks the F flag" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "host-deps: qemu-img missing" >&2; exit 1; }
