#!/bin/sh
# nodeagent preremove: deb prerm and rpm %preun.
#   deb: $1 = remove | upgrade <new-version> | deconfigure | failed-upgrade
#   rpm: $1 = how many nodeagent packages remain afterwards: 0 removal, >= 1 upgrade (this is
#        the OLD version's %preun, run after the new version's %post)
# An upgrade leaves the running agent alone (it may be draining); only a removal stops it.
# Never fails. DPKG_ROOT: see postinstall.sh.
set -u

root=${DPKG_ROOT:-}

systemd_online() {
    [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# The .pyc files are compiled on the host, not shipped: remove them so that the package manager
# can remove or replace the directories.
remove_bytecode() {
    if [ -d "$root/usr/lib/nodeagent/site" ]; then
        find "$root/usr/lib/nodeagent/site" -depth -type d -name __pycache__ \
            -exec rm -rf {} + 2>/dev/null || true
    fi
}

stop_and_disable() {
    if systemd_online; then
        systemctl stop nodeagent-upgrade-restart.service >/dev/null 2>&1 || true
        systemctl disable --now nodeagent.service nodeagent-spot-label.service || true
    elif command -v systemctl >/dev/null 2>&1 &&
        systemctl --root="${root:-/}" disable nodeagent.service nodeagent-spot-label.service \
            >/dev/null 2>&1; then
        :
    else
        for unit in nodeagent.service nodeagent-spot-label.service; do
            rm -f "$root/etc/systemd/system/multi-user.target.wants/$unit"
        done
    fi
    # Tells a later reinstall (deb: configure with the old version as $2) to apply presets again.
    # Not in /var/lib/nodeagent: that is the service user's, and a symlink it put there would make
    # this root-run script truncate whatever file it names. /var/lib/misc is root's alone.
    if mkdir -p "$root/var/lib/misc"; then
        : >"$root/var/lib/misc/nodeagent.package-removed" || true
    fi
}

case "${1:-}" in
    remove | 0)
        stop_and_disable
        remove_bytecode
        ;;
    upgrade | failed-upgrade | [1-9] | [1-9][0-9]*)
        remove_bytecode
        ;;
esac
exit 0
