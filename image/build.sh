#!/usr/bin/env bash
# Builds the flashable image: `sudo image/build.sh` runs every step in image/steps/ in order;
# `image/build.sh 20 30` reruns only those steps (on the previous steps' output in $IMGWORK).
# Each step runs under `timeout`; artefacts go to $IMGWORK (default /var/tmp/fieldmesh-img).
# Env: IMGWORK, FIELDMESH_SKIP_XZ=1 (40-compress writes only the .sha256 of the raw image).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export REPO
source "$REPO/image/config.sh"
export IMGWORK
[ "$(id -u)" = 0 ] || { echo "build.sh: needs root (mmdebstrap --mode=root, root-owned tree)" >&2; exit 1; }

# Step timeouts in seconds (a cold rootfs took ~15 min on 2 cores).
declare -A limit=([10]=2400 [20]=1500 [21]=300 [30]=300 [40]=900)

mkdir -p "$IMGWORK"
"$REPO/image/host-deps.sh"

wanted=("$@")
started=$(date +%s)
for step in "$REPO"/image/steps/[0-9][0-9]-*.sh; do
    name=$(basename "$step" .sh)
    num=${name%%-*}
    case "$name" in *.chroot) continue ;; esac   # run by its sibling, inside the rootfs
    if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " == *" $num "* ]]; then continue; fi
    t0=$(date +%s)
    echo "==== image step $name"
    if ! timeout --kill-after=10 "${limit[$num]:-600}" "$step"; then
        echo "==== image step $name FAILED after $(( $(date +%s) - t0 )) s" >&2
        exit 1
    fi
    echo "==== image step $name: $(( $(date +%s) - t0 )) s"
done
echo "==== image built in $(( $(date +%s) - started )) s"
if [ -f "$IMAGE" ]; then
    echo "image: $IMAGE ($(du -m --apparent-size "$IMAGE" | cut -f1) MiB, $(du -m "$IMAGE" | cut -f1) MiB allocated)"
    for f in "$IMAGE.xz" "$IMAGE.xz.sha256" "$IMAGE.sha256"; do
        [ -f "$f" ] && echo "$(basename "$f"): $(du -m --apparent-size "$f" | cut -f1) MiB"
    done
    cat "$IMAGE".sha256 "$IMAGE".xz.sha256 2>/dev/null || true
fi
