#!/usr/bin/env bash
# Step 20: cross-compile `fieldmesh` for aarch64 and lay the project's files onto a fresh copy
# of the step-10 rootfs: rootfs-overlay/ as it is, systemd/ into the vendor unit directory,
# the binary into /usr/bin. Then 21-install.chroot.sh runs inside it. Output: $ROOTFS.
set -euo pipefail
source "$REPO/image/config.sh"

# The cross build (NOTES §1). One cargo at a time on this machine: the lock serialises builds.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig
export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
(cd "$REPO" && flock /tmp/fm-cargo.lock cargo build --release -p fieldmesh --target "$RUST_TARGET")
# Where cargo put it: CARGO_TARGET_DIR when set (relative to the repository), else target/.
target_dir=${CARGO_TARGET_DIR:-$REPO/target}
case $target_dir in /*) ;; *) target_dir=$REPO/$target_dir ;; esac
bin=$target_dir/$RUST_TARGET/release/fieldmesh

rm -rf "$ROOTFS"
cp -a "$ROOTFS_BASE" "$ROOTFS"
# Root-owned whatever the checkout's owner (mkfs.ext4 -d keeps owners, NOTES §5.7).
tar -C "$REPO/rootfs-overlay" --owner=0 --group=0 -cf - . | tar -C "$ROOTFS" -xf -
units=$ROOTFS/usr/lib/systemd/system
for f in "$REPO"/systemd/*.service "$REPO"/systemd/*.path "$REPO"/systemd/*.timer "$REPO"/systemd/*.target; do
    [ -e "$f" ] && install -m 0644 "$f" "$units/"
done
for d in "$REPO"/systemd/*.d; do
    install -d "$units/$(basename "$d")"
    install -m 0644 "$d"/*.conf "$units/$(basename "$d")/"
done
install -D -m 0644 "$REPO/systemd/90-fieldmesh.preset" "$ROOTFS/usr/lib/systemd/system-preset/90-fieldmesh.preset"
aarch64-linux-gnu-strip -o "$ROOTFS/usr/bin/fieldmesh" "$bin"
chmod 0755 "$ROOTFS/usr/bin/fieldmesh"
echo "fieldmesh: $(du -h "$ROOTFS/usr/bin/fieldmesh" | cut -f1) stripped"

# The project's own SIP scenarios for the two-appliance self-test (selftest/pair).
install -d "$ROOTFS/usr/lib/fieldmesh/selftest/sipp"
install -m 0644 "$REPO"/tests/sipp/{register,uac_proxy,uas_proxy}.xml "$ROOTFS/usr/lib/fieldmesh/selftest/sipp/"

install -m 0755 "$REPO/image/steps/21-install.chroot.sh" "$ROOTFS/tmp/21-install.chroot.sh"
chroot "$ROOTFS" /tmp/21-install.chroot.sh
rm -f "$ROOTFS/tmp/21-install.chroot.sh"
