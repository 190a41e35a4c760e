#!/usr/bin/env bash
# Install Prometheus (the server and promtool) from Debian for the monitoring tests and
# `qnemu up --monitoring`. Idempotent; about 15 s with apt-get update on a Debian 12 host.
# Recommends (node exporter, IPMI and SMART tools) are left out: qnemu needs none of them.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version | head -n 1
