#!/usr/bin/env bash
# Step 40: fieldmesh-<version>-arm64.img.xz and its .sha256 (what is published and flashed).
# FIELDMESH_SKIP_XZ=1 (CI) writes only the .sha256 of the raw image and saves ~2 minutes.
set -euo pipefail
source "$REPO/image/config.sh"
cd "$(dirname "$IMAGE")"
name=$(basename "$IMAGE")
if [ "${FIELDMESH_SKIP_XZ:-0}" = 1 ]; then
    rm -f "$name.xz" "$name.xz.sha256"
    sha256sum "$name" >"$name.sha256"
    echo "xz skipped (FIELDMESH_SKIP_XZ=1)"
else
    rm -f "$name.sha256"
    xz -T0 -6 -k -f "$name"
    sha256sum "$name.xz" >"$name.xz.sha256"
fi
