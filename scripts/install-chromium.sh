#!/bin/sh
# Install Debian's Chromium for the playground's end-to-end tests (driven by Playwright through
# its executable_path: no browser is ever downloaded by Playwright itself).
#
# Idempotent: does nothing when /usr/bin/chromium is already there. Non-interactive.
set -eu

have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if have_package chromium && [ -x /usr/bin/chromium ]; then
    echo "chromium is already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
    SUDO_ENV="sudo -E"
else
    SUDO=""
    SUDO_ENV=""
fi

export DEBIAN_FRONTEND=noninteractive

$SUDO apt-get update
# fonts-liberation: readable text in the screenshots the tests keep as artefacts.
$SUDO_ENV apt-get install -y --no-install-recommends chromium fonts-liberation

echo "installed: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
