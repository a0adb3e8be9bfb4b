# Sourced by build.sh and every step: what the image is made of. Override any value from the
# environment (e.g. IMGWORK=/scratch image/build.sh).
: "${IMGWORK:=/var/tmp/fieldmesh-img}"          # every artefact; never inside the repository
SUITE=bookworm
ARCH=arm64
RUST_TARGET=aarch64-unknown-linux-gnu
COMPONENTS="main contrib non-free non-free-firmware"
DEBCACHE=$IMGWORK/debcache                      # .deb cache kept between builds
ROOTFS_BASE=$IMGWORK/rootfs-base                # output of 10-rootfs (packages only)
ROOTFS=$IMGWORK/rootfs                          # 20/21 work on a copy of it
BOOT_LABEL=RASPIFIRM                            # Debian's raspi image labels
ROOT_LABEL=RASPIROOT
BOOT_OFFSET_MIB=4                               # p1 starts at 4 MiB (SD erase-block alignment)
BOOT_SIZE_MIB=256
HOSTNAME=fieldmesh
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)
IMAGE_NAME=fieldmesh-$VERSION-$ARCH
IMAGE=$IMGWORK/$IMAGE_NAME.img
