#!/bin/sh
# Step 21, inside the rootfs (run by 20-install.sh): users from sysusers.d, enablement from the
# preset files only, and nothing that must differ per card: SSH host keys and the machine-id
# are made on first boot (fieldmesh-ssh-hostkeys.service, systemd).
set -eu
systemd-sysusers
systemctl preset-all
# Self-check: the daemon runs on this CPU and knows the setup subcommand.
fieldmesh setup --settings /boot/firmware/fieldmesh.toml --out /tmp/fieldmesh-setup-check >/dev/null 2>&1
rm -rf /tmp/fieldmesh-setup-check
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/journal/*
echo "enabled: $(systemctl list-unit-files --state=enabled --no-legend | awk '{print $1}' | paste -sd' ')"
