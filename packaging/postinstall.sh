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
# Left by preremove when the package was removed (not upgraded); see enable_per_preset. It lives
# where only root writes: the state directory belongs to the service user.
removed_marker=$root/var/lib/misc/nodeagent.package-removed
# Where versions before that left it. Honoured only as a plain file owned by root (the service
# user could put anything there), and removed with rm, which never follows a symlink.
legacy_marker=$root/var/lib/nodeagent/.package-removed

# The package was removed (not upgraded) before this install.
was_removed() {
    [ -f "$removed_marker" ] && [ ! -L "$removed_marker" ] && return 0
    [ -f "$legacy_marker" ] && [ ! -L "$legacy_marker" ] &&
        [ -n "$(find "$legacy_marker" -maxdepth 0 -user 0 2>/dev/null)" ]
}

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
    rm -f "$removed_marker" "$legacy_marker"
}

# The service user, the way each distribution does it: systemd-sysusers with the file we ship in
# /usr/lib/sysusers.d (AL2023, Ubuntu), else the distribution's own tools. Idempotent; an existing
# user is kept as it is. Nothing of the user's is ever removed, not even on purge (Debian policy:
# its files may survive elsewhere). An alternate root gets the user in its own /etc/passwd.
create_user() {
    if [ -n "$root" ]; then
        if command -v systemd-sysusers >/dev/null 2>&1; then
            systemd-sysusers --root="$root" nodeagent.conf >/dev/null 2>&1 || true
        fi
        return 0
    fi
    getent passwd nodeagent >/dev/null 2>&1 && return 0
    if command -v systemd-sysusers >/dev/null 2>&1 && systemd-sysusers nodeagent.conf; then
        return 0
    fi
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/nodeagent --no-create-home \
            --shell /usr/sbin/nologin --comment "nodeagent spot-interruption handler" nodeagent ||
            echo "nodeagent: could not create the nodeagent user" >&2
    elif command -v adduser >/dev/null 2>&1; then
        adduser --system --group --home /var/lib/nodeagent --no-create-home \
            --gecos "nodeagent spot-interruption handler" nodeagent >/dev/null ||
            echo "nodeagent: could not create the nodeagent user" >&2
    else
        echo "nodeagent: no systemd-sysusers, useradd or adduser: create the nodeagent user" >&2
    fi
}

# The agent (user nodeagent) reads /etc/nodeagent/conf.d/*.conf. The directory stays root's to
# write; its group becomes nodeagent, so the agent and nobody else may read it. Files already
# there (written when the agent ran as root, e.g. 0600 by user-data) get group nodeagent and g+r;
# where setfacl exists, a default ACL gives files written later the same read access whatever
# the writer's umask. Secrets belong in credentials (LoadCredential=) or WEBHOOK_URL_FILE.
grant_config_read() {
    [ -z "$root" ] || return 0
    conf_d=/etc/nodeagent/conf.d
    [ -d "$conf_d" ] && [ ! -L "$conf_d" ] || return 0
    getent group nodeagent >/dev/null 2>&1 || return 0
    if chgrp nodeagent "$conf_d"; then
        chmod 0750 "$conf_d" || true
    fi
    # -type f: never a symlink (find does not follow them), so nothing outside is touched.
    find "$conf_d" -maxdepth 1 -type f -name '*.conf' -user root -group root \
        -exec chgrp nodeagent {} + -exec chmod g+r,g-w {} + 2>/dev/null || true
    if command -v setfacl >/dev/null 2>&1; then
        setfacl -m g:nodeagent:rx -d -m g:nodeagent:r "$conf_d" 2>/dev/null || true
    fi
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
        create_user
        grant_config_read
        if [ -z "${2:-}" ] || was_removed; then
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
        create_user
        grant_config_read
        enable_per_preset
        ;;
    [2-9] | [1-9][0-9]*)
        create_user
        grant_config_read
        if systemd_online; then
            systemctl daemon-reload || true
        fi
        ;;
esac
exit 0
