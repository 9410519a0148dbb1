#!/usr/bin/env bash
# Install the EdgeFleet agent on a device (Raspberry Pi OS / Debian / Ubuntu, run as root).
#
#   install-agent.sh --profile rpi4 --config agent.toml [--source 'edgefleet[agent]==0.1.0']
#
# Creates the 'edgefleet' system user, a venv in /opt/edgefleet/venv with only the agent extra,
# /etc/edgefleet/agent.toml (mode 0640) and the systemd unit, then enables and starts it.
set -euo pipefail

profile=""
config=""
source_spec="edgefleet[agent]"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --source) source_spec="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install-agent: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "install-agent: run as root" >&2; exit 2; }
[ -n "$config" ] && [ -f "$config" ] || { echo "install-agent: --config FILE is required" >&2; exit 2; }
command -v python3 >/dev/null || { echo "install-agent: python3 (>= 3.11) is required" >&2; exit 2; }

here="$(cd "$(dirname "$0")" && pwd)"
id edgefleet >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin edgefleet
install -d -o root -g root -m 0755 /opt/edgefleet
python3 -m venv /opt/edgefleet/venv
/opt/edgefleet/venv/bin/pip install --quiet --upgrade pip
/opt/edgefleet/venv/bin/pip install --quiet "$source_spec"

if [ -n "$profile" ]; then
  # The profile's memory budget becomes the unit's MemoryHigh / MemoryMax (a drop-in).
  install -d -o root -g root -m 0755 /etc/systemd/system/edgefleet-agent.service.d
  /opt/edgefleet/venv/bin/python -c "import sys; from firmware_configs.profile import load_profile, systemd_memory_dropin; print(systemd_memory_dropin(load_profile(sys.argv[1])), end='')" "$profile" \
    > /etc/systemd/system/edgefleet-agent.service.d/memory.conf
fi
install -d -o root -g edgefleet -m 0750 /etc/edgefleet
install -o root -g edgefleet -m 0640 "$config" /etc/edgefleet/agent.toml
install -d -o edgefleet -g edgefleet -m 0750 /var/lib/edgefleet
install -o root -g root -m 0644 "$here/systemd/edgefleet-agent.service" /etc/systemd/system/edgefleet-agent.service
systemctl daemon-reload
systemctl enable --now edgefleet-agent.service
echo "install-agent: edgefleet-agent is running; logs: journalctl -u edgefleet-agent -f"
