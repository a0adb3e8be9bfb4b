#!/usr/bin/env bash
# Boots a fieldmesh image under qemu-system-aarch64 -M virt (TCG), on a throw-away qcow2
# overlay (2 GiB, so first-boot growroot has room), with kernel, initrd and cmdline.txt taken
# from the image's FAT partition. Networking: user mode with restrict=on (the guest reaches
# nothing outside), and host ports on 127.0.0.1 only: SIP over TCP → 5060, API → 8080,
# SSH → 22. SIP over UDP cannot be forwarded: with restrict=on, libslirp drops every UDP
# datagram the guest sends (other than DHCP/TFTP), so requests would arrive and answers not.
#
#   image/qemu/boot.sh [--background] [--work DIR] [--append "ARGS"] [--sip-port N]
#                      [--api-port N] [--ssh-port N] [--smp N] [--mem MiB]
#                      [--settings FILE] [--keep-disk] [--node N] [--link listen:PORT|connect:PORT]
#                      IMAGE
#
# --settings: boot a copy of the image whose /boot/firmware/fieldmesh.toml is FILE.
# --keep-disk: boot the overlay disk DIR already holds (a second boot after a power cut).
# --node N (1-9): distinct MAC addresses for this VM, so several VMs can share a link.
# --link: a second Ethernet NIC joined to another VM's over one TCP stream on 127.0.0.1
#   (qemu -netdev socket); start the listen side first. It becomes a batman-adv port like any
#   Ethernet of the appliance.
# Foreground (default): the serial console on this terminal; Ctrl-A X quits.
# --background: qemu runs detached; DIR gets serial.log, qemu.pid and ports (shell syntax).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
source "$REPO/image/config.sh"

background=0 work="" append="" settings="" sip=0 api=0 ssh=0 smp=2 mem=1024 image=""
keep=0 node=0 link=""
while [ $# -gt 0 ]; do
    case "$1" in
        --background) background=1 ;;
        --work) work=$2; shift ;;
        --append) append=$2; shift ;;
        --sip-port) sip=$2; shift ;;
        --api-port) api=$2; shift ;;
        --ssh-port) ssh=$2; shift ;;
        --smp) smp=$2; shift ;;
        --mem) mem=$2; shift ;;
        --settings) settings=$2; shift ;;
        --keep-disk) keep=1 ;;
        --node) node=$2; shift ;;
        --link) link=$2; shift ;;
        -h|--help) sed -n "2,22p" "$0"; exit 0 ;;
        *) image=$1 ;;
    esac
    shift
done
image=$(readlink -f "${image:-$IMAGE}")
[ -f "$image" ] || { echo "boot.sh: no image $image" >&2; exit 1; }
work=${work:-$IMGWORK/qemu-$$}
mkdir -p "$work/boot"

free_port() { # a port free for TCP and UDP on 127.0.0.1
    python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); break
    except OSError:
        pass
print(p)'
}
[ "$sip" != 0 ] || sip=$(free_port)
[ "$api" != 0 ] || api=$(free_port)
[ "$ssh" != 0 ] || ssh=$(free_port)

fat="$image@@$(( BOOT_OFFSET_MIB * 1024 * 1024 ))"
rm -f "$work"/boot/*
mcopy -n -i "$fat" '::vmlinuz-*' '::initrd.img-*' ::cmdline.txt "$work/boot/"
kernel=$(ls "$work"/boot/vmlinuz-* | tail -n1)
initrd=$(ls "$work"/boot/initrd.img-* | tail -n1)
# The Pi's consoles (tty0, ttyS1) mean nothing on -M virt: its UART is ttyAMA0.
cmdline="$(tr ' ' '\n' <"$work/boot/cmdline.txt" | grep -v '^console=' | grep . | paste -sd' ') console=ttyAMA0,115200 $append"

rm -f "$work/serial.log" "$work/qemu.pid"
if [ $keep = 1 ]; then
    [ -f "$work/disk.qcow2" ] || { echo "boot.sh: --keep-disk but no $work/disk.qcow2" >&2; exit 1; }
else
    rm -f "$work/disk.qcow2" "$work/image.img"
    if [ -n "$settings" ]; then
        cp --sparse=always --reflink=auto "$image" "$work/image.img"
        mcopy -o -i "$work/image.img@@$(( BOOT_OFFSET_MIB * 1024 * 1024 ))" "$settings" ::fieldmesh.toml
        image=$work/image.img
    fi
    qemu-img create -q -f qcow2 -F raw -b "$image" "$work/disk.qcow2" 2G
fi
cat >"$work/ports" <<PORTS
SIP_PORT=$sip
API_PORT=$api
SSH_PORT=$ssh
PORTS

args=(-M virt -accel tcg,thread=multi -cpu cortex-a72 -smp "$smp" -m "$mem"
      -display none -no-reboot
      -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
      -drive "if=none,id=hd0,file=$work/disk.qcow2,format=qcow2,discard=unmap"
      -device virtio-blk-pci,drive=hd0 -device virtio-rng-pci
      -device "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:$(printf %02x $((0x56 + node)))"
      -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$sip-:5060,hostfwd=tcp:127.0.0.1:$api-:8080,hostfwd=tcp:127.0.0.1:$ssh-:22")
case "$link" in
    "") ;;
    listen:*|connect:*)
        args+=(-device "virtio-net-pci,netdev=l2,mac=52:54:00:aa:00:$(printf %02x "$node")"
               -netdev "socket,id=l2,${link%%:*}=127.0.0.1:${link#*:}") ;;
    *) echo "boot.sh: --link listen:PORT or connect:PORT, not '$link'" >&2; exit 1 ;;
esac
echo "boot.sh: SIP (TCP) 127.0.0.1:$sip, API http://127.0.0.1:$api/api/status, SSH 127.0.0.1:$ssh; work $work" >&2
if [ $background = 1 ]; then
    qemu-system-aarch64 "${args[@]}" -monitor none -serial "file:$work/serial.log" -daemonize -pidfile "$work/qemu.pid"
else
    exec qemu-system-aarch64 "${args[@]}" -serial mon:stdio
fi
