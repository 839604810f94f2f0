"""Carries out the agent's plans on this node through the Kubernetes API.

Why one module of this size: it has one job, being the agent's Responder on Kubernetes (startup:
finding the Node and writing our labels; execute: cordon, label, taint attempt, drain; undo), and
each step is a few calls into kube/ (node.py for the writes, drain.py for the drain, identity.py
for the Node). It imports the decision core's Plan and NodeNotice and the store's NoticeRecord
because the Responder contract (ports.py) is written in them: the responder fills in the working
record's progress fields, which the reporters then read as a NoticeRecord.
"""

from __future__ import annotations

import concurrent.futures
import logging
from datetime import datetime
from typing import Callable, TypeVar

from nodeagent import __version__, other_handlers
from nodeagent.clock import Clock, SystemClock, iso_seconds, seconds
from nodeagent.config import Settings
from nodeagent.decide_terms import NodeNotice, Plan
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.jsontypes import JsonObject
from nodeagent.kube import node as node_keys
from nodeagent.kube.agent_label import AgentLabel
from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.drain import Drainer
from nodeagent.kube.errors import ApiError, KubeconfigMissing, KubeError
from nodeagent.kube.gate import GateLimits, Priority
from nodeagent.kube.identity import NodeIdentity, find_node
from nodeagent.kube.kubeconfig import import_client_modules
from nodeagent.kube.node import NodeActions, parse_taint
from nodeagent.kube.pod_rules import DrainOptions
from nodeagent.log_once import LogOnce
from nodeagent.ports import StepHooks
from nodeagent.retry import Backoff, Failure, retry
from nodeagent.state import NoticeRecord

log = logging.getLogger("nodeagent.kube")
T = TypeVar("T")


class _NotAttempted(KubeError):
    """The deadline passed or a stop came before the next attempt: not retried."""


def _transient_node_write(error: BaseException) -> bool:
    if isinstance(error, _NotAttempted):
        return False
    if isinstance(error, ApiError):
        return error.status >= 500 or error.status in (429, 409)
    return isinstance(error, KubeError)


class KubeResponder:
    def __init__(
        self,
        settings: Settings,
        api_factory: Callable[[KubeOptions], KubeApi] = KubeApi,
        clock: Clock | None = None,
    ):
        self.settings = settings
        import_client_modules()
        self.api_factory = api_factory
        self.clock: Clock = clock or SystemClock()
        self._on_api_failure: Callable[[], None] = lambda: None  # see listen_api_failures
        self.api: KubeApi | None = None
        self.parallelism = settings.drain_parallelism
        self.node: NodeIdentity | None = None
        self.actions: NodeActions | None = None
        self._once = LogOnce(log)
        self.found_labels: dict[str, str] = {}  # the node's labels as startup found them
        self.agent_label: AgentLabel | None = None  # created once the node is known
        self.eviction_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.other_handler: str | None = None  # the warning about an NTH pod here, once said

    # ------------------------------------------------------------ startup

    def startup(self, identity: InstanceIdentity | None) -> str | None:
        path = self.settings.kubeconfig
        if self.api is None:
            try:
                self.parallelism = self.settings.drain_parallelism  # sized into the pool: fixed till restart
                self.api = self.api_factory(
                    KubeOptions(
                        kubeconfig=path,
                        exec_timeout_s=self.settings.exec_plugin_timeout,
                        pool_size=self.parallelism + 8,
                        gate=GateLimits(
                            max_in_flight=self.parallelism,
                            qps=float(self.settings.api_qps),
                            burst=self.settings.api_burst,
                        ),
                    )
                )
                self.api.on_failure = lambda: self._on_api_failure()  # late-bound: a reload re-points it
            except KubeconfigMissing:
                return self._say(f"waiting for {path}", logging.INFO)
            except KubeError as error:
                return self._say(str(error), logging.ERROR)
        try:
            self.api.warm_up()
            self.node = find_node(
                self.api,
                self.settings.node_name,
                identity.instance_id if identity else None,
                identity.availability_zone if identity else None,
            )
        except KubeError as error:
            return self._say(f"Kubernetes not ready: {error}", logging.WARNING)
        self.actions = NodeActions(self.api, self.node.name, dry_run=self.settings.dry_run)
        self._look_for_other_handlers()
        log.info(
            "acting on node %s (learned from %s, providerID %s) via %s",
            self.node.name,
            self.node.how,
            self.node.provider_id or "unset",
            self.api.host,
        )
        self.found_labels = dict(self.node.labels)  # before _startup_labels resets our agent label
        self._startup_labels(identity)
        self._probe_taint()
        return None

    def _probe_taint(self) -> None:
        """Learn now, with a server-side dry run, whether these credentials may taint. Node
        credentials may not (NodeRestriction), and the drain then spends no requests on an
        attempt that must fail; the refusal is logged once, here, instead of at the notice."""
        assert self.api is not None and self.actions is not None and self.node is not None
        taint = parse_taint(self.settings.taint, "probe", "probe")
        if not taint or self.actions.taint_forbidden:
            return
        probe = NodeActions(self.api, self.node.name, dry_run=True)
        try:
            probe.try_taint(*taint)
        except KubeError as error:
            log.debug("taint probe inconclusive (%s); the drain will try for real", error)
            return
        self.actions.taint_forbidden = probe.taint_forbidden

    def _look_for_other_handlers(self) -> None:
        """One list of this node's pods at start, so another handler here is said before a notice."""
        assert self.api is not None and self.node is not None
        try:
            listing = self.api.request(
                "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={self.node.name}")]
            )
        except KubeError as error:
            log.debug("could not list this node's pods to look for another handler: %s", error)
            return
        items = listing.get("items")
        self.pods_listed(items if isinstance(items, list) else [])

    def pods_listed(self, pods: list[JsonObject]) -> None:
        """Each list of this node's pods (at start, at each drain): an NTH pod here is said once,
        in the log and as an Event on the Node. The drain carries on either way."""
        if self.other_handler is not None or self.node is None:
            return
        found = other_handlers.find_other_handlers(pods, self.node.name)
        if not found:
            return
        self.other_handler = other_handlers.warning_text(found, self.node.name)
        log.warning("%s", self.other_handler)
        if not self.settings.events or self.api is None:
            return
        body = other_handlers.event_body(self.node.name, found, self.other_handler, self.clock.now())
        try:
            self.api.request(
                "POST",
                f"/api/v1/namespaces/{other_handlers.EVENT_NAMESPACE}/events",
                query=[("dryRun", "All")] if self.settings.dry_run else [],
                body=body,
                priority=Priority.EVENT,
            )
        except ApiError as error:
            if error.status != 409:  # 409: an earlier run of the agent wrote it
                log.warning("could not write the %s event: %s", other_handlers.EVENT_REASON, error)
        except KubeError as error:
            log.warning("could not write the %s event: %s", other_handlers.EVENT_REASON, error)

    def _say(self, text: str, level: int) -> str:
        self._once.say("startup", text, level)  # one key: a new text replaces the last
        return text

    def _startup_labels(self, identity: InstanceIdentity | None) -> None:
        assert self.actions is not None and self.node is not None
        labels: dict[str, str | None] = {
            node_keys.LABEL_AGENT: "watching",
            node_keys.LABEL_VERSION: __version__,
        }
        key, value = node_keys.SPOT_LABEL
        if (
            self.settings.spot_label
            and identity is not None
            and identity.life_cycle == "spot"
            and self.node.labels.get(key) != value
        ):
            log.info("node registered without %s=%s; setting it (SPOT_LABEL=true)", key, value)
            labels[key] = value
        try:
            self.actions.label(labels)
            self.node.labels.update({k: v for k, v in labels.items() if v is not None})
        except KubeError as error:
            log.warning("could not set the presence labels: %s", error)

    def notice_on_node(self) -> NodeNotice | None:
        """The notice this node's labels and annotations say was being handled when the agent
        started (set with the cordon), for rebuilding a lost state file; None if there is none."""
        if self.node is None:
            return None
        labels = self.found_labels
        notice_id = labels.get(node_keys.LABEL_NOTICE)
        deadline = self.node.annotations.get(node_keys.ANNOTATION_DEADLINE)
        if not notice_id or not deadline:
            return None
        return NodeNotice(
            id=notice_id,
            kind=labels.get(node_keys.LABEL_KIND, ""),
            deadline=deadline,
            action=self.node.annotations.get(node_keys.ANNOTATION_ACTION, ""),
            agent=labels.get(node_keys.LABEL_AGENT, ""),
            cordoned=bool(self.node.unschedulable),
        )

    def describe(self) -> str:
        return f"node {self.node.name}" if self.node else "node unknown"

    def node_name(self) -> str | None:
        return self.node.name if self.node else None

    def api_and_node(self) -> tuple[KubeApi, str] | None:
        if self.api is None or self.node is None:
            return None
        return self.api, self.node.name

    def listen_api_failures(self, listener: Callable[[], None]) -> None:
        """Call `listener` on each failed API request (the metrics reporter counts them)."""
        self._on_api_failure = listener

    def reload(self, settings: Settings) -> None:
        self.settings = settings

    def spot_label(self) -> bool | None:
        if self.node is None:
            return None
        key, value = node_keys.SPOT_LABEL
        return self.node.labels.get(key) == value

    def agent_state_changed(self, agent_state: str, timeout_s: float | None = None) -> None:
        """Have the node's nodeagent.io/agent label say `agent_state`. Without a timeout it is
        written now and, if that fails, kept (AgentLabel: retried until it holds); with one (the
        stop) it is one bounded try."""
        if self.actions is None or self.api is None or self.node is None:
            return
        if timeout_s is None:
            self._agent_label().set(agent_state)
            return
        if self._agent_label().written == agent_state:
            return
        self._agent_label().close()
        given_up_at = self.clock.monotonic() + timeout_s
        try:
            self.actions.label(
                {node_keys.LABEL_AGENT: agent_state},
                timeout_s=timeout_s,
                give_up=lambda: self.clock.monotonic() >= given_up_at,
            )
        except KubeError as error:
            log.warning("could not update %s: %s", node_keys.LABEL_AGENT, error)

    def _agent_label(self) -> AgentLabel:
        if self.agent_label is None:
            assert self.actions is not None and self.node is not None
            actions = self.actions
            self.agent_label = AgentLabel(
                lambda state, give_up: actions.label({node_keys.LABEL_AGENT: state}, give_up=give_up),
                written=self.node.labels.get(node_keys.LABEL_AGENT),
            )
        return self.agent_label

    # ------------------------------------------------------------ acting

    def execute(self, plan: Plan, record: NoticeRecord, hooks: StepHooks) -> None:
        """Cordon, label, try the taint, drain. `hooks.should_stop()` is asked before every write:
        a cancelled or superseded response writes nothing more for its notice."""
        assert self.actions is not None and self.api is not None and self.node is not None
        actions = NodeActions(
            self.api, self.node.name, dry_run=plan.dry_run, taint_forbidden=self.actions.taint_forbidden
        )
        if hooks.should_stop():
            return
        if not record.cordoned and self._node_write(plan.deadline, "cordon", actions.cordon, hooks):
            record.cordoned = True
            hooks.checkpoint()
            hooks.step(record, "Cordoned", f"cordoned for {plan.kind} {plan.notice_id}")
            log.info(
                "cordoned %s for %s%s", self.node.name, plan.notice_id, " (dry run)" if plan.dry_run else ""
            )
        labels: dict[str, str | None] = {
            node_keys.LABEL_KIND: plan.kind,
            node_keys.LABEL_NOTICE: plan.notice_id,
        }
        if plan.exclude_from_lb:
            labels[node_keys.EXCLUDE_LB] = "true"
        annotations: dict[str, str | None] = {
            node_keys.ANNOTATION_DEADLINE: iso_seconds(plan.deadline),
            node_keys.ANNOTATION_ACTION: plan.action,
        }
        if hooks.should_stop():
            return
        if not record.labelled and self._node_write(
            plan.deadline, "label", lambda: actions.label(labels, annotations), hooks
        ):
            record.labelled = True
            hooks.checkpoint()
            taint = parse_taint(self.settings.taint, plan.kind, plan.notice_id)
            if taint and not hooks.should_stop():
                try:
                    actions.try_taint(*taint)
                except KubeError as error:
                    log.warning("taint attempt failed: %s", error)
                self.actions.taint_forbidden = actions.taint_forbidden
        if plan.response != "drain":
            record.outcome = "cordoned"
            return
        if hooks.should_stop():
            return
        options = DrainOptions(
            deadline=plan.deadline,
            margin_s=self.settings.drain_margin,
            force_at_deadline=plan.force_at_deadline,
            dry_run=plan.dry_run,
            parallelism=self.parallelism,
            evict_local_storage=self.settings.evict_local_storage,
            evict_unmanaged=self.settings.evict_unmanaged,
            last_tier_classes=self.settings.last_tier(),
        )
        if record.drain_started is None:
            record.drain_started = iso_seconds(self.clock.now())
            hooks.checkpoint()
        hooks.step(
            record,
            "DrainStarted",
            f"draining for {plan.kind} {plan.notice_id}, deadline {iso_seconds(plan.deadline)}",
        )
        drainer = Drainer(
            self.api,
            self.node.name,
            options,
            progress=lambda gone, total: hooks.progress(gone, total, plan.deadline),
            should_stop=hooks.should_stop,
            clock=self.clock,
            on_listed=self.pods_listed,
            pool=self._eviction_pool(),
        )
        started = self.clock.monotonic()
        result = drainer.run()
        record.total = max(record.total, result.total)
        record.evicted += len(result.evicted)
        record.forced += len(result.forced)
        record.failed += len(result.failed)
        record.left = result.left
        if result.interrupted:
            record.outcome = "drain interrupted (resumes on the next start)"
            return
        record.drain_finished = iso_seconds(self.clock.now())
        summary = (
            f"{len(result.evicted)} evicted, {len(result.forced)} forced, {len(result.left)} left, "
            f"{len(result.failed)} failed of {result.total} in {self.clock.monotonic() - started:.1f}s"
            f"{' (dry run)' if plan.dry_run else ''}"
        )
        record.outcome = ("drained: " if result.ok else "drain incomplete: ") + summary
        hooks.step(record, "DrainFinished" if result.ok else "DrainFailed", summary)
        if result.left:
            log.error("pods left on the node at the deadline: %s", ", ".join(result.left[:20]))

    def _node_write(
        self, deadline: datetime, what: str, action: Callable[[], object], hooks: StepHooks
    ) -> bool:
        """A write to our own Node object. A missing Node (404: deleted, or not re-registered yet)
        has nothing to cordon or label, but its pods can still be evicted: say so and go on."""
        try:
            self._until_deadline(deadline, what, action, hooks)
            return True
        except ApiError as error:
            if error.status != 404:
                raise
            log.error(
                "cannot %s node %s: the Node object is missing (%s); evicting its pods anyway",
                what,
                self.node.name if self.node else "?",
                error.message,
            )
            return False

    def _until_deadline(self, deadline: datetime, what: str, action: Callable[[], T], hooks: StepHooks) -> T:
        """Retry `action` on 5xx, 429, 409 and unreachable until the deadline or a stop."""

        def attempt() -> T:
            if self.clock.now() >= deadline:  # never act after the deadline
                raise _NotAttempted(f"{what}: not attempted, the deadline {iso_seconds(deadline)} has passed")
            if hooks.should_stop():
                raise _NotAttempted(f"{what} interrupted by the stop (agent stopping or notice withdrawn)")
            return action()

        def stop(failure: Failure[T]) -> bool:
            return hooks.should_stop() or self.clock.now() + seconds(failure.wait_s) >= deadline

        def first_failure(failure: Failure[T]) -> None:
            if failure.attempts == 1:
                log.warning("%s failed (%s); retrying until the deadline", what, failure.error)

        def gave_up(failure: Failure[T]) -> T:
            if hooks.should_stop():
                raise KubeError(f"{what} interrupted by the stop: {failure.error}")
            raise KubeError(f"{what} did not succeed before the deadline: {failure.error}")

        return retry(
            attempt,
            schedule=Backoff(0.2, 1.0),
            transient=_transient_node_write,
            stop=stop,
            sleep=self.clock.sleep,
            before_sleep=first_failure,
            gave_up=gave_up,
        )

    def undo(self, record: NoticeRecord, reason: str) -> None:
        if self.actions is None:
            raise KubeError("Kubernetes is not ready")
        if record.cordoned:
            self.actions.uncordon()
            log.info("uncordoned %s: %s", self.node.name if self.node else "?", reason)
        removal: dict[str, str | None] = {key: None for key in node_keys.OUR_LABELS}
        self.actions.label(removal, {key: None for key in node_keys.OUR_ANNOTATIONS})
        taint = parse_taint(self.settings.taint, record.kind, record.id)
        if taint:
            self.actions.remove_taint(taint[0])

    def _eviction_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """One pool of eviction threads for the agent's life (its size is fixed till restart)."""
        if self.eviction_pool is None:
            self.eviction_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.parallelism, thread_name_prefix="evict"
            )
        return self.eviction_pool

    def close(self) -> None:
        if self.eviction_pool is not None:
            self.eviction_pool.shutdown(wait=False)
        if self.agent_label is not None:
            self.agent_label.close()
        if self.api is not None:
            self.api.close()
