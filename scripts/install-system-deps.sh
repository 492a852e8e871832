#!/usr/bin/env bash
# System packages the tests and PNG export need: Debian's Chromium (kaleido renders PNGs with
# it; the dashboard test drives it through chromedriver). Skips what is already installed.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
