#!/usr/bin/env bash
# Installs everything uplinkd's demo and tests need on a Debian 12 machine (run as root).
# Idempotent: packages already present are not fetched again.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

apt_packages=(
  iproute2 nftables conntrack dnsmasq-base procps iputils-ping udhcpc kmod  # the lab and the kernel tools
  udev libudev1                                                             # pyudev, the VM tier's udevd
  libsystemd-dev pkg-config gcc python3-dev                                 # systemd-python builds here
  wireguard-tools wireguard-go                                              # tunnels (netns tier)
  kea-dhcp6-server                                                          # an ISP's DHCPv6-PD server (LAN IPv6 delegate)
  qemu-system-x86 linux-image-amd64 busybox-static file                     # the VM tier (TCG, virtme-ng)
  nix-bin                                                                   # nix-instantiate --parse
  iperf3 ethtool                                                            # bench/forwarding.py
  chromium chromium-driver curl                                             # the status page test (headless)
  dbus libdbus-1-dev libglib2.0-dev                                         # modem tests: dbus-daemon; dbus-python (dbusmock) builds here
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own python3 has no pip until python3-pip is installed, and refuses system-wide
# installs (PEP 668) unless told: this is a test/lab machine, so we tell it.
if ! python3 -m pip --version >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-pip python3-venv >/dev/null
fi
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install -q --disable-pip-version-check -e "$here/controller[test,systemd]" virtme-ng
