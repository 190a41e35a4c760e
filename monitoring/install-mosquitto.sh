#!/usr/bin/env bash
# Install the Mosquitto MQTT broker from Debian for the MQTT API tests and local use.
# Idempotent; about 5 s with apt-get update on a Debian 12 host. The tests start their own
# mosquitto on a free port, so the packaged system service must not hold port 1883:
# where the package started it (hosts with systemd or sysvinit), it is stopped and disabled.
set -euo pipefail
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
fi
if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
elif command -v service >/dev/null && service mosquitto status >/dev/null 2>&1; then
    service mosquitto stop >/dev/null 2>&1 || true
fi
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -h 2>/dev/null | head -n 1 || true
