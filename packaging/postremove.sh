#!/bin/sh
# nodeagent postremove: deb postrm and rpm %postun.
#   deb: $1 = remove | purge | upgrade | failed-upgrade | abort-install | abort-upgrade | disappear
#   rpm: $1 = how many nodeagent packages remain: 0 removal, >= 1 upgrade (nothing to do then)
# Never fails. DPKG_ROOT: see postinstall.sh.
set -u

root=${DPKG_ROOT:-}

reload_systemd() {
    if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload || true
    fi
}

case "${1:-}" in
    remove | 0)
        reload_systemd
        ;;
    purge)
        # dpkg removes the conffiles itself; the state and the exec plugin's caches are ours.
        rm -rf "$root/var/lib/nodeagent" "$root/var/lib/private/nodeagent" \
            "$root/var/cache/nodeagent" "$root/var/cache/private/nodeagent"
        rm -f "$root/var/lib/misc/nodeagent.package-removed"
        rmdir "$root/etc/nodeagent/conf.d" "$root/etc/nodeagent" 2>/dev/null || true
        reload_systemd
        ;;
esac
exit 0
