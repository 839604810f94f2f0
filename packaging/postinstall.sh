#!/bin/sh
# nodeagent postinstall: deb postinst and rpm %post (the rpm's %posttrans finishes upgrades).
#   deb: $1 = configure (with $2 = the previously configured version, empty on a first install)
#        or abort-upgrade / abort-remove / abort-deconfigure
#   rpm: $1 = how many nodeagent packages are installed once this one is: 1 install, >= 2 upgrade
# Never fails the install: every step that touches systemd is guarded.
# DPKG_ROOT (dpkg --root=DIR) installs into another root: then only files are touched.
set -u

root=${DPKG_ROOT:-}
site=/usr/lib/nodeagent/site
# Left by preremove when the package was removed (not upgraded); see enable_per_preset.
removed_marker=$root/var/lib/nodeagent/.package-removed

systemd_online() {
    [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# First install (or reinstall after removal): enable both units (the agent and the boot-time
# spot-label oneshot) as the presets say. We ship /usr/lib/systemd/system-preset/80-nodeagent.preset
# ("enable"); an admin's own preset file with "disable nodeagent.service" wins. Upgrades keep
# whatever the admin chose. Nothing is started here: on an image build the agent must first run on
# the instance that boots from the image.
enable_per_preset() {
    if systemd_online; then
        systemctl daemon-reload || true
        systemctl preset nodeagent.service nodeagent-spot-label.service ||
            echo "nodeagent: 'systemctl preset' failed" >&2
    elif command -v systemctl >/dev/null 2>&1 &&
        systemctl --root="${root:-/}" preset nodeagent.service nodeagent-spot-label.service \
            >/dev/null 2>&1; then
        : # offline: image build, chroot, container, DPKG_ROOT
    else
        # No usable systemctl: do what the shipped preset says.
        wants=$root/etc/systemd/system/multi-user.target.wants
        if mkdir -p "$wants"; then
            for unit in nodeagent.service nodeagent-spot-label.service; do
                ln -sf "/usr/lib/systemd/system/$unit" "$wants/$unit" || true
            done
        fi
    fi
    rm -f "$removed_marker"
}

# Byte-compile for the host's python3 (the package ships no .pyc; the service cannot write them
# under ProtectSystem=strict). preremove deletes them again.
compile_bytecode() {
    [ -z "$root" ] || return 0
    [ -x /usr/bin/python3 ] || return 0
    /usr/bin/python3 -I -S -m compileall -q -j 0 "$site" >/dev/null 2>&1 || true
}

case "${1:-}" in
    configure)
        if [ -z "${2:-}" ] || [ -e "$removed_marker" ]; then
            enable_per_preset
        elif systemd_online; then
            systemctl daemon-reload || true
        fi
        compile_bytecode
        if [ -n "${2:-}" ] && systemd_online; then
            # Upgrade: restart onto the new code, but never in the middle of a drain.
            /usr/lib/nodeagent/upgrade-restart || true
        fi
        ;;
    abort-upgrade | abort-remove | abort-deconfigure)
        compile_bytecode
        ;;
    1)
        enable_per_preset
        ;;
    [2-9] | [1-9][0-9]*)
        if systemd_online; then
            systemctl daemon-reload || true
        fi
        ;;
esac
exit 0
