"""The `nodeagent` command: run, check-config, status, drill, migrate-from-nth, demo, imds-sim, version.

Each command imports the module that does its work when it runs, not here: `status`,
`check-config` and `version` then start without loading the daemon, the Kubernetes client and the
reporters, and `demo`/`imds-sim` can say plainly that nodeagent_sim is absent (a packaged node).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nodeagent import __version__, config, logs, terminal
from nodeagent.config import EX_CONFIG, ConfigError, Settings, load_with_set_flags


def _load_settings(args: argparse.Namespace) -> Settings:
    return load_with_set_flags(os.environ, args.set)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        settings = _load_settings(args)
    except ConfigError as error:
        print(f"<3>{logs.one_line(str(error))}", file=sys.stderr, flush=True)
        return EX_CONFIG
    logs.setup(settings.log_level)
    log = logging.getLogger("nodeagent")
    if not settings.enabled:
        log.info("disabled by config (ENABLED=false from %s); exiting", settings.sources.get("ENABLED"))
        return 0
    from nodeagent.agent import Agent
    from nodeagent.kube.responder import KubeResponder
    from nodeagent.ports import LoggingResponder, Responder
    from nodeagent.report import build_reporters

    kube = None if args.log_only else KubeResponder(settings)
    responder: Responder = kube if kube is not None else LoggingResponder()
    agent = Agent(
        settings,
        responder,
        reporters=build_reporters(settings, responder, kube=kube),
        reload_settings=lambda: _load_settings(args),
        rebuild_reporters=lambda new, running: build_reporters(new, responder, kube=kube, running=running),
        label_stopped=True,
    )
    agent.install_signal_handlers()
    log.info("nodeagent %s starting (python %s)", __version__, sys.version.split()[0])
    return agent.run()


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        settings = _load_settings(args)
    except ConfigError as error:
        terminal.say(str(error), sys.stderr)
        return EX_CONFIG
    rows = config.describe(settings)
    width = max(len(key) for key, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for key, value, source in rows:
        terminal.say(f"{key:<{width}}  {value:<{value_width}}  ({source})")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


SOURCE_CHECKOUT_ONLY = (
    "nodeagent {command}: the simulators and the demo are not part of the installed package; "
    "they run from a source checkout: clone the repository, then `pip install -e .` in it and "
    "run `nodeagent {command}` there."
)


def _source_checkout_only(command: str, error: ImportError) -> int:
    # Only the simulator package itself missing means "packaged node"; any other import
    # failure is a bug and keeps its traceback.
    if error.name is None or not (error.name == "nodeagent_sim" or error.name.startswith("nodeagent_sim.")):
        raise error
    print(SOURCE_CHECKOUT_ONLY.format(command=command), file=sys.stderr)
    return 1


def cmd_imds_sim(args: argparse.Namespace) -> int:
    try:
        from nodeagent_sim.imds import main_imds_sim
    except ImportError as error:
        return _source_checkout_only("imds-sim", error)
    return main_imds_sim(args.port, args.host)


def cmd_status(args: argparse.Namespace) -> int:
    from nodeagent.status import main_status

    return main_status(args)


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from nodeagent_sim.demo import main_demo
    except ImportError as error:
        return _source_checkout_only("demo", error)
    return main_demo(args)


def cmd_migrate_from_nth(args: argparse.Namespace) -> int:
    from nodeagent.migrate_from_nth import main_migrate_from_nth

    return main_migrate_from_nth(args)


def cmd_drill(args: argparse.Namespace) -> int:
    from nodeagent.drill import main_drill

    return main_drill(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodeagent", description="Spot-interruption handler for EKS nodes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    def config_flags(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            default=[],
            help="override a config key (highest precedence)",
        )

    run = add("run", cmd_run, "the daemon (systemd Type=notify)")
    config_flags(run)
    run.add_argument("--log-only", action="store_true", help="watch and log; take no Kubernetes actions")
    config_flags(
        add("check-config", cmd_check_config, "print the effective config and where each value came from")
    )
    status = add("status", cmd_status, "the daemon's state, last notice, drain progress and reachability")
    config_flags(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--no-probe", action="store_true", help="don't contact IMDS or the API")
    drill = add("drill", cmd_drill, "rehearse a notice on this node through the real pipeline")
    config_flags(drill)
    drill.add_argument(
        "--kind",
        choices=("spot-itn", "rebalance", "scheduled", "asg"),
        default="spot-itn",
        help="the notice to rehearse (default spot-itn)",
    )
    drill.add_argument(
        "--in", dest="in_", metavar="DURATION", default="120s", help="deadline from now (default 120s)"
    )
    drill.add_argument("--dry-run", action="store_true", help="server-side dry run: nothing changes")
    drill.add_argument("--yes", action="store_true", help="really cordon and drain this node")
    drill.add_argument("--undo", action="store_true", help="uncordon and remove our labels at the end")
    migrate = add(
        "migrate-from-nth",
        cmd_migrate_from_nth,
        "print a conf.d drop-in converted from aws-node-termination-handler Helm chart values "
        "(the values with no equivalent go to standard error)",
    )
    migrate.add_argument(
        "-f",
        "--values",
        action="append",
        metavar="FILE",
        default=[],
        help="a values file, as given to helm (repeatable, later wins; - reads standard input)",
    )
    migrate.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="a chart value in helm's --set syntax (a.b=v, a={x,y}, a\\.b=v, k=v,k2=v2; repeatable)",
    )
    demo = add(
        "demo", cmd_demo, "the whole pipeline against both simulators, with a timeline (source checkout only)"
    )
    demo.add_argument("--quick", action="store_true", help="shorter deadlines (used by CI)")
    imds_sim = add("imds-sim", cmd_imds_sim, "run the IMDS simulator (source checkout only)")
    imds_sim.add_argument("--port", type=int, default=1338, help="port to listen on (default 1338)")
    imds_sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("version", cmd_version, "print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        terminal.say(str(error), sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
