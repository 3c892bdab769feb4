#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if they are missing.
#
# Idempotent: each package is checked with `dpkg -s` first, so a machine that
# already has them never touches the network. When packages are missing and we
# are not root, print what to install and exit 0 (the tests that need them fail
# with a message pointing back here).
set -euo pipefail

# The one list. Add packages here as tests start to need them
# (planned: dovecot-imapd for the email tests).
PACKAGES=(
    docker-compose  # Debian's v1.29: `docker-compose config` validates docker-compose.yml
    chromium        # headless, for the web chat page's tests (and the browser tool)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system deps: all present (${PACKAGES[*]})"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "system deps: missing ${missing[*]}; not root, so not installing them." >&2
    echo "  install with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 0
fi

echo "system deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
