#!/usr/bin/env bash
# Step 30: the disk image, without mounts or loop devices (NOTES §4.3): an MBR with a FAT32
# firmware partition (p1 at 4 MiB, bootable, type c) and an ext4 root (p2), each file system
# made as a file (mtools, mkfs.ext4 -d) and written into place with dd.
set -euo pipefail
source "$REPO/image/config.sh"

work=$IMGWORK/disk
rm -rf "$work" && mkdir -p "$work"
fw=$ROOTFS/boot/firmware
aside=$IMGWORK/firmware.aside

mkfs.vfat -F 32 -n "$BOOT_LABEL" -C "$work/boot.vfat" $((BOOT_SIZE_MIB * 1024)) >/dev/null
mcopy -s -p -m -i "$work/boot.vfat" "$fw"/* ::/

# The root file system without the firmware files (they live on p1): move them aside on the
# same file system (instant) and back afterwards, whatever happens.
rm -rf "$aside" && mv "$fw" "$aside" && mkdir "$fw"
trap 'rmdir "$fw" && mv "$aside" "$fw"' EXIT
used=$(du -sm "$ROOTFS" | cut -f1)
size=$(( used * 115 / 100 + 160 ))
until mkfs.ext4 -q -F -b 4096 -T default -L "$ROOT_LABEL" -d "$ROOTFS" "$work/root.ext4" "${size}M"; do
    size=$(( size + 64 ))
    [ $size -lt $(( used * 2 + 512 )) ] || { echo "30-disk: mkfs.ext4 keeps failing" >&2; exit 1; }
    echo "30-disk: root file system full at $(( size - 64 )) MiB; trying $size MiB"
done

root_start=$(( BOOT_OFFSET_MIB + BOOT_SIZE_MIB ))
rm -f "$IMAGE"
truncate -s $(( root_start + size ))M "$IMAGE"
sfdisk -q "$IMAGE" <<PARTS
label: dos
unit: sectors
start=$(( BOOT_OFFSET_MIB * 2048 )), size=$(( BOOT_SIZE_MIB * 2048 )), type=c, bootable
start=$(( root_start * 2048 )), type=83
PARTS
dd if="$work/boot.vfat" of="$IMAGE" bs=1M seek="$BOOT_OFFSET_MIB" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$IMAGE" bs=1M seek="$root_start" conv=notrunc,sparse status=none
rm -rf "$work"
echo "rootfs ${used} MiB in a ${size} MiB ext4; image $(( root_start + size )) MiB"
