"""The reference documentation, generated from the code it documents: the config reference
(docs/configuration.md, and the README's short table) from config.KEYS, and the nodeagent(8) man
page from the same table and the CLI's own argparse parser.

    python -m nodeagent.reference man [--date YYYY-MM-DD]   # roff, for packaging/build
    python -m nodeagent.reference config                    # the full config table (Markdown)

scripts/gen-docs writes the Markdown into docs/configuration.md and README.md (and checks them,
for the tests); packaging/build renders the man page into both packages.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from nodeagent import __version__
from nodeagent.cli import build_parser
from nodeagent.config import (
    DEFAULT_CONFIG_DIR,
    ENV_PREFIX,
    EX_CONFIG,
    KEYS,
    KEYS_BY_NAME,
    KeySpec,
)

# The few settings most people change: the README's short table.
COMMON_KEYS = (
    "ENABLED",
    "DRY_RUN",
    "ON_REBALANCE",
    "DRAIN_MARGIN",
    "FORCE_AT_DEADLINE",
    "WEBHOOK_URL",
    "METRICS_TEXTFILE",
    "EVENTS",
)


# ------------------------------------------------------------------ Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_rows(specs: Iterable[KeySpec]) -> list[str]:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for spec in specs:
        default = f"`{spec.default}`" if spec.default else "(empty)"
        secret = ". Secret: never logged or shown" if spec.secret else ""
        rows.append(f"| `{spec.name}` | {_md_cell(default)} | {_md_cell(spec.help)}{secret} |")
    return rows


def config_table() -> str:
    """Every key: the table in docs/configuration.md."""
    lines = _md_rows(KEYS)
    restart = ", ".join(f"`{spec.name}`" for spec in KEYS if spec.restart_only)
    lines += ["", f"Read once at start (a reload says so; they apply on the next restart): {restart}."]
    return "\n".join(lines) + "\n"


def common_table() -> str:
    """The README's short table: the settings most people change."""
    return "\n".join(_md_rows(KEYS_BY_NAME[name] for name in COMMON_KEYS)) + "\n"


# ------------------------------------------------------------------ roff


def _roff(text: str) -> str:
    """Escape text for a roff line: backslashes, hyphens in words, `code` as bold."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def _option_synopsis(action: argparse.Action) -> str:
    name = action.option_strings[0] if action.option_strings else action.dest.upper()
    if action.choices:
        value = "|".join(str(c) for c in action.choices)
    else:
        value = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    if action.nargs == 0:  # store_true and friends
        return f"[\\fB{_roff(name)}\\fR]"
    repeat = "..." if isinstance(action, argparse._AppendAction) else ""
    return f"[\\fB{_roff(name)}\\fR \\fI{_roff(value)}\\fR]{repeat}"


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, subparser) for each command, in the parser's order."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((name, helps.get(name, ""), sub))
    return found


def _options(sub: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in sub._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def manpage(date: str | None = None) -> str:
    """nodeagent(8) in roff (man macros). `date`: YYYY-MM-DD; by default SOURCE_DATE_EPOCH's day
    (reproducible builds), else today (UTC)."""
    if date is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
        date = moment.strftime("%Y-%m-%d")
    parser = build_parser()
    out: list[str] = [
        f'.TH NODEAGENT 8 "{date}" "nodeagent {__version__}" "System Administration"',
        ".SH NAME",
        "nodeagent \\- cordon and drain this EKS node before EC2 interrupts it",
        ".SH SYNOPSIS",
    ]
    for name, _, sub in _commands(parser):
        out.append(".br")
        options = " ".join(_option_synopsis(a) for a in _options(sub))
        out.append(f"\\fBnodeagent {_roff(name)}\\fR {options}".rstrip())
    out += [
        ".SH DESCRIPTION",
        "\\fBnodeagent\\fR runs on the node itself as a systemd service. It polls the EC2 instance "
        "metadata service (IMDS) for spot interruption notices, rebalance recommendations, scheduled "
        "events and Auto Scaling termination states, and cordons and drains its own node with the "
        "kubelet's kubeconfig so that the pods are gone before the deadline. It needs no "
        "ClusterRole, DaemonSet or queue, and opens no listening socket.",
        ".PP",
        "The daemon reports its state to systemd (\\fBType=notify\\fR: READY, STATUS, WATCHDOG), "
        "keeps a state file so that a restart resumes an unfinished drain, and writes Kubernetes "
        "Events, an optional webhook and an optional node_exporter textfile.",
        ".SH COMMANDS",
    ]
    for name, help_text, sub in _commands(parser):
        out += [".TP", f"\\fB{_roff(name)}\\fR", _roff(help_text) + "."]
        for action in _options(sub):
            flag = ", ".join(f"\\fB{_roff(s)}\\fR" for s in action.option_strings)
            if action.nargs != 0:
                value = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
                flag += f" \\fI{_roff(value)}\\fR"
            detail = action.help or ""
            if action.choices:
                detail += f" (one of: {', '.join(str(c) for c in action.choices)})"
            out += [".RS", ".TP", flag, _roff(detail), ".RE"]
    out += [
        ".SH CONFIGURATION",
        "Each key is read from, later sources winning: the built-in default; "
        f"\\fI{DEFAULT_CONFIG_DIR}/nodeagent.conf\\fR; "
        f"\\fI{DEFAULT_CONFIG_DIR}/conf.d/*.conf\\fR in lexical order; the environment variable "
        f"\\fB{ENV_PREFIX}\\fR\\fIKEY\\fR; and \\fB\\-\\-set\\fR \\fIKEY\\fR=\\fIvalue\\fR. "
        "Files hold \\fIKEY\\fR=\\fIvalue\\fR lines; \\fB#\\fR starts a comment. Durations take "
        "90s, 2m, 1.5s or 500ms. An unknown key or a bad value stops the command with exit status "
        f"{EX_CONFIG} and a message naming the key. \\fBnodeagent check\\-config\\fR prints the "
        "effective value of every key and where it came from.",
    ]
    for spec in KEYS:
        default = f"default \\fB{_roff(spec.default)}\\fR" if spec.default else "default empty"
        secret = " A secret: never logged or shown." if spec.secret else ""
        out += [".TP", f"\\fB{spec.name}\\fR ({default})", _roff(spec.help) + "." + secret]
    restart = ", ".join(spec.name for spec in KEYS if spec.restart_only)
    out += [
        ".PP",
        f"SIGHUP (\\fBsystemctl reload nodeagent\\fR) reloads the configuration; {_roff(restart)} "
        "are read once and apply on the next restart.",
        ".SH FILES",
        ".TP",
        f"\\fI{DEFAULT_CONFIG_DIR}/nodeagent.conf\\fR",
        "Every key, commented out, with its default (kept on upgrade).",
        ".TP",
        f"\\fI{DEFAULT_CONFIG_DIR}/conf.d/\\fR",
        "Drop-ins, e.g. written by user-data; readable by root only: the place for secrets.",
        ".TP",
        "\\fI/var/lib/nodeagent/state.json\\fR",
        "The state file: every step of every notice, written atomically.",
        ".TP",
        "\\fI/usr/lib/systemd/system/nodeagent.service\\fR",
        "The unit.",
        ".SH EXIT STATUS",
        ".TP",
        "\\fB0\\fR",
        "Success; for \\fBrun\\fR a clean stop, or ENABLED=false. For \\fBstatus\\fR: healthy.",
        ".TP",
        "\\fB1\\fR",
        "A failure (\\fBrun\\fR: systemd restarts it; \\fBstatus\\fR: a problem is listed; "
        "\\fBdrill\\fR: the response did not finish as configured).",
        ".TP",
        "\\fB2\\fR",
        "\\fBdrill\\fR: a usage error, or a real drill without \\fB\\-\\-yes\\fR.",
        ".TP",
        "\\fB75\\fR",
        "\\fBdrill\\fR: the daemon is handling a real notice.",
        ".TP",
        f"\\fB{EX_CONFIG}\\fR",
        "A bad configuration (the unit does not restart on it).",
        ".SH EXAMPLES",
        ".nf",
        "systemctl status nodeagent",
        "journalctl \\-u nodeagent \\-p warning",
        "nodeagent status",
        "nodeagent drill \\-\\-dry\\-run",
        "nodeagent check\\-config",
        ".fi",
        ".SH SEE ALSO",
        "\\fBsystemctl\\fR(1), \\fBjournalctl\\fR(1), \\fBsystemd.service\\fR(5)",
    ]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodeagent.reference")
    sub = parser.add_subparsers(dest="what", required=True)
    man = sub.add_parser("man", help="the nodeagent(8) man page, in roff")
    man.add_argument("--date", help="YYYY-MM-DD (default: SOURCE_DATE_EPOCH's day, else today)")
    sub.add_parser("config", help="the full config table, in Markdown")
    sub.add_parser("common", help="the README's short config table, in Markdown")
    args = parser.parse_args(argv)
    if args.what == "man":
        sys.stdout.write(manpage(args.date))
    elif args.what == "config":
        sys.stdout.write(config_table())
    else:
        sys.stdout.write(common_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
