#!/usr/bin/env bash
# Step 10: the arm64 root filesystem from Debian packages (mmdebstrap, root mode + binfmt).
# Output: $ROOTFS_BASE. The .deb cache in $DEBCACHE makes a rebuild download nothing.
# The overlay is laid on here already because the initramfs and the firmware's config.txt and
# cmdline.txt are generated from files in it (fstab, initramfs conf, /etc/default/raspi-*).
set -euo pipefail
source "$REPO/image/config.sh"

mkdir -p "$DEBCACHE"
rm -rf "$ROOTFS_BASE"
packages=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$REPO/image/packages.list" | paste -sd, -)

# In the chroot, after all packages: the one initramfs run and the firmware files.
finish='set -e
ver=$(ls /lib/modules | sort -V | tail -n1)
rm -f /usr/sbin/update-initramfs
dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
update-initramfs -c -k "$ver"
DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware "$ver"'

mmdebstrap --mode=root --arch="$ARCH" --variant=minbase \
    --components="$COMPONENTS" --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --skip=download/empty --skip=essential/unlink \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in $DEBCACHE /var/cache/apt/archives/" \
    --essential-hook='chroot "$1" dpkg-divert --local --rename --divert /usr/sbin/update-initramfs.real --add /usr/sbin/update-initramfs' \
    --essential-hook='ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
    --customize-hook="sync-out /var/cache/apt/archives $DEBCACHE" \
    --customize-hook="sync-in $REPO/rootfs-overlay /" \
    --customize-hook="chroot \"\$1\" /bin/sh -c '$finish'" \
    "$SUITE" "$ROOTFS_BASE"
# mmdebstrap copies the host's resolv.conf (NOTES §5 pitfall 6); the overlay's is put back in 20.
rm -f "$ROOTFS_BASE/etc/resolv.conf"
ls "$ROOTFS_BASE"/boot/firmware/vmlinuz-* "$ROOTFS_BASE"/boot/firmware/initrd.img-* >/dev/null
du -sh "$ROOTFS_BASE" | sed 's/^/rootfs-base: /'
