#!/bin/sh
# nodeagent rpm %posttrans: runs after the whole transaction, i.e. on an upgrade once the old
# version's %preun/%postun have run and its files are gone. No arguments.
# Never fails the transaction. DPKG_ROOT: see postinstall.sh.
set -u

root=${DPKG_ROOT:-}

# Byte-compile for the host's python3 (preremove of the old version just deleted its .pyc).
if [ -z "$root" ] && [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -I -S -m compileall -q -j 0 /usr/lib/nodeagent/site >/dev/null 2>&1 || true
fi

# Upgrade or reinstall of a running agent: restart onto the new code, never in the middle of a
# drain. The helper does nothing when the unit is not running (a first install never starts it).
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    /usr/lib/nodeagent/upgrade-restart || true
fi
exit 0
