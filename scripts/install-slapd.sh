#!/bin/sh
# Install OpenLDAP's slapd and ldap-utils (Debian packages) for the LDAP connector tests.
#
# Idempotent: does nothing when both are already installed. Non-interactive. The tests start
# their own throwaway slapd on a free port, so the system service is neither started nor needed:
# a policy-rc.d that forbids service starts is in place while apt runs, and removed afterwards.
set -eu

have_package() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

if have_package slapd && have_package ldap-utils; then
    echo "slapd and ldap-utils are already installed"
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

# Forbid invoke-rc.d from starting slapd during installation (exit 101 = action forbidden).
POLICY=/usr/sbin/policy-rc.d
OWN_POLICY=no
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    OWN_POLICY=yes
fi
cleanup() {
    if [ "$OWN_POLICY" = yes ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

# Answer debconf so the postinst neither prompts nor creates a system database (none is needed).
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections

$SUDO apt-get update
$SUDO_ENV apt-get install -y --no-install-recommends slapd ldap-utils

echo "installed: $(/usr/sbin/slapd -VV 2>&1 | head -n 1)"
