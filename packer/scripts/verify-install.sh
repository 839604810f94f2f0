#!/bin/sh
# Run on the build instance after the package is installed: fail the AMI build unless the
# config validates, the units verify with no complaint at all, and they are enabled.
# systemd-analyze verify exits 0 on unknown keys and bad values and only prints them, so
# any output on stderr fails the build. Runs as root (see execute_command in the templates).
set -eu

# Units that must be enabled on this image; the Ubuntu build passes only nodeagent.service.
ENABLED_UNITS=${ENABLED_UNITS:-nodeagent.service nodeagent-spot-label.service}
UNIT_DIR=/usr/lib/systemd/system

echo "==> nodeagent version: $(nodeagent version)"

echo "==> nodeagent check-config"
nodeagent check-config

for unit in nodeagent.service nodeagent-spot-label.service; do
    echo "==> systemd-analyze verify $unit"
    if ! complaints=$(systemd-analyze verify --man=false "$UNIT_DIR/$unit" 2>&1 >/dev/null); then
        printf '%s\n' "$complaints" >&2
        echo "FAIL: systemd-analyze verify $unit exited non-zero" >&2
        exit 1
    fi
    if [ -n "$complaints" ]; then
        printf '%s\n' "$complaints" >&2
        echo "FAIL: systemd-analyze verify $unit printed the warnings above" >&2
        exit 1
    fi
done

# Verifying one unit does not build the boot transaction, so an ordering cycle through
# multi-user.target (Ubuntu's cloud-final.service is After=multi-user.target) would go
# unseen. Verify the target and fail on cycles that pass through our units; complaints
# about the image's own units are not ours to fix and are only shown.
echo "==> boot transaction: no ordering cycle through nodeagent units"
boot=$(systemd-analyze verify --man=false --generators=true "$UNIT_DIR/multi-user.target" \
    "$UNIT_DIR/cloud-final.service" 2>&1 >/dev/null || true)
if printf '%s\n' "$boot" | grep -Eq '(ordering cycle|Found dependency) on nodeagent'; then
    printf '%s\n' "$boot" >&2
    echo "FAIL: a nodeagent unit is part of an ordering cycle at boot" >&2
    exit 1
fi
[ -z "$boot" ] || printf 'note (not ours): %s\n' "$boot"

for unit in $ENABLED_UNITS; do
    state=$(systemctl is-enabled "$unit" || true)
    if [ "$state" != enabled ]; then
        echo "FAIL: $unit is '$state', expected enabled" >&2
        exit 1
    fi
    echo "==> $unit is enabled"
done

# The units are enabled, not started, so the build leaves no drop-in; make sure of it, as
# a stale one is only removed once the oneshot has reached IMDS on an on-demand node.
rm -f "${NODEADM_DROPIN_DIR:-/etc/eks/nodeadm.d}/50-nodeagent-spot-label.yaml"
echo "==> nodeagent installed and verified"
