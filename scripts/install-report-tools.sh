#!/bin/sh
# Install what `twokey report` and its tests need from Debian: Pango (WeasyPrint lays out the
# PDF with it), fonts, and poppler-utils (pdftoppm/pdftotext: the tests render the PDF's pages).
#
# Idempotent: does nothing when everything is already installed. Non-interactive.
set -eu

PACKAGES="poppler-utils libpango-1.0-0 libpangoft2-1.0-0 fonts-liberation"

have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for package in $PACKAGES; do
    have_package "$package" || missing="$missing $package"
done
if [ -z "$missing" ]; then
    echo "report tools are already installed"
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
# shellcheck disable=SC2086 # one word per package
$SUDO_ENV apt-get install -y --no-install-recommends $missing

echo "installed:$missing"
