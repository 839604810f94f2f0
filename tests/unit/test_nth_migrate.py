"""The NTH chart values -> nodeagent drop-in table (nodeagent/nth_chart.py) and conversion
(nodeagent/nth_migrate.py). Pure: the chart's default values file is a fixture (tests/fixtures/nth-chart-values.yaml); no processes."""

from pathlib import Path

import pytest
import yaml

from nodeagent import config, nth_chart, nth_migrate
from nodeagent.config import ConfigSource
from nodeagent.helm_values import dotted, effective_values, flatten

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nth-chart-values.yaml"
CHART_DEFAULTS = yaml.safe_load(FIXTURE.read_text(encoding="utf-8"))
WEBHOOK = "https://hooks.example.test/services/T0SECRET/B0SECRET/xoxb-5ecret"


def lines_of(conversion):
    return {s.key: s.value for s in conversion.settings if s.active}


def listed_keys(conversion):
    return {key for listed in conversion.listed for key in listed.keys}


def loads(conversion, origin="/etc/nodeagent/conf.d/50-from-nth.conf"):
    """What check-config would do with the drop-in: parse every line and every key."""
    text = nth_migrate.render_dropin(conversion, "test", "")
    return config.load_settings([ConfigSource(origin, text)], {})


def test_every_value_of_the_charts_defaults_is_covered_by_a_row():
    uncovered = [dotted(path) for path in flatten(CHART_DEFAULTS) if nth_migrate.row_for(path) is None]
    assert not uncovered


@pytest.mark.parametrize("values", [{}, CHART_DEFAULTS], ids=["nothing given", "the defaults file given"])
def test_every_default_value_is_mapped_or_listed_with_a_reason(values):
    conversion = nth_migrate.convert(values)
    accounted = set(conversion.mapped) | listed_keys(conversion)
    missing = sorted({nth_migrate.row_for(path).key for path in flatten(CHART_DEFAULTS)} - accounted)
    assert not missing
    assert all(listed.reason for listed in conversion.listed)
    for key in conversion.mapped:
        assert nth_chart.ROWS_BY_KEY[key].nodeagent, f"{key} became a line but its row names no key"


def test_the_converters_chart_defaults_are_the_charts():
    for key, value in nth_chart.CHART_DEFAULTS.items():
        if key in CHART_DEFAULTS:
            assert CHART_DEFAULTS[key] == value, key


def test_giving_the_defaults_file_changes_nothing():
    assert lines_of(nth_migrate.convert(CHART_DEFAULTS)) == lines_of(nth_migrate.convert({}))


def test_the_chart_defaults_become_what_nth_did():
    conversion = nth_migrate.convert({})
    assert lines_of(conversion) == {
        "ON_SPOT_INTERRUPTION": "drain",
        "ON_SCHEDULED_EVENT": "drain",
        "ON_REBALANCE": "ignore",  # NTH ignores rebalance recommendations unless asked
        "ON_ASG_TERMINATION": "ignore",
        "TAINT": "",
        "DRY_RUN": "false",
        "EVICT_LOCAL_STORAGE": "true",
        "DRAIN_WINDOW": "120s",
        "LOG_LEVEL": "info",
        "EVENTS": "false",
    }
    settings = loads(conversion)
    assert settings.on_rebalance == "ignore" and settings.drain_window == 120 and settings.taint == ""
    assert not conversion.warnings


def test_the_spot_workshops_node_selector_is_listed_as_the_users_with_the_ami_advice():
    conversion = nth_migrate.convert(effective_values([], ["nodeSelector.lifecycle=Ec2Spot"]))
    assert lines_of(conversion) == lines_of(nth_migrate.convert({}))
    placement = next(listed for listed in conversion.listed if "nodeSelector" in listed.keys)
    assert "nodeSelector" in placement.set_by_user and "AMI" in placement.reason
    assert any("lifecycle=Ec2Spot" in warning and "AMI" in warning for warning in conversion.warnings)
    assert "nodeSelector (yours)" in nth_migrate.render_notes(conversion)


@pytest.mark.parametrize("monitoring,draining,cordon_only,expected", [
    (False, False, False, "ignore"),
    (True, False, False, "cordon"),
    (True, True, False, "drain"),
    (False, True, False, "drain"),
    (True, True, True, "cordon"),
])
def test_rebalance_monitoring_and_draining(monitoring, draining, cordon_only, expected):
    values = {"enableRebalanceMonitoring": monitoring, "enableRebalanceDraining": draining, "cordonOnly": cordon_only}
    assert lines_of(nth_migrate.convert(values))["ON_REBALANCE"] == expected


def test_cordon_only_cordons_every_kind_that_is_on_and_off_stays_off():
    values = effective_values([], ["cordonOnly=true,enableScheduledEventDraining=false,enableASGLifecycleDraining=true"])
    lines = lines_of(nth_migrate.convert(values))
    assert (lines["ON_SPOT_INTERRUPTION"], lines["ON_SCHEDULED_EVENT"], lines["ON_ASG_TERMINATION"]) == (
        "cordon", "ignore", "cordon")


@pytest.mark.parametrize("text,expected", [("true", "drain"), ("false", "ignore"), ("", "drain"), ("True", "drain"),
                                           ("0", "ignore")])
def test_string_booleans_read_as_nths_binary_reads_them(text, expected):
    assert lines_of(nth_migrate.convert({"enableSpotInterruptionDraining": text}))["ON_SPOT_INTERRUPTION"] == expected


def test_a_value_that_is_not_a_boolean_is_said_and_read_as_the_default():
    conversion = nth_migrate.convert({"dryRun": "maybe"})
    assert lines_of(conversion)["DRY_RUN"] == "false"
    assert any("dryRun" in w and "not a boolean" in w for w in conversion.warnings)


def test_taint_node_keeps_the_effect():
    lines = lines_of(nth_migrate.convert({"taintNode": True, "taintEffect": "NoExecute"}))
    assert lines["TAINT"] == "nodeagent.io/interruption=<kind>:NoExecute"


def test_simple_values():
    values = {"dryRun": True, "deleteLocalData": False, "nodeTerminationGracePeriod": 300, "logLevel": "warn",
              "instanceMetadataURL": "http://127.0.0.1:1338", "emitKubernetesEvents": "true",
              "excludeFromLoadBalancers": True}
    conversion = nth_migrate.convert(values)
    settings = loads(conversion)
    assert (settings.dry_run, settings.evict_local_storage, settings.drain_window) == (True, False, 300)
    assert (settings.log_level, settings.imds_url, settings.events, settings.exclude_from_lb) == (
        "warning", "http://127.0.0.1:1338", True, "true")


def test_a_value_nodeagent_would_refuse_is_commented_out_and_said():
    conversion = nth_migrate.convert({"instanceMetadataURL": "https://imds.invalid", "nodeTerminationGracePeriod": 0})
    refused = {s.key for s in conversion.settings if not s.active}
    assert refused == {"IMDS_URL", "DRAIN_WINDOW"}
    assert sum("would be refused" in w for w in conversion.warnings) == 2
    loads(conversion)  # the drop-in still loads


def test_the_webhook_url_is_never_copied_and_the_file_is_named():
    for values in ({"webhookURL": WEBHOOK}, effective_values([], [f"webhookURL={WEBHOOK}"])):
        conversion = nth_migrate.convert(values)
        dropin = nth_migrate.render_dropin(conversion, "test", "")
        notes = nth_migrate.render_notes(conversion)
        assert "SECRET" not in dropin + notes and "5ecret" not in dropin + notes
        assert f"#WEBHOOK_URL_FILE={nth_migrate.WEBHOOK_URL_FILE}" in dropin.splitlines()
        assert "webhookURL=<set, not shown>" in dropin
        loads(conversion)


def test_a_webhook_url_in_a_kubernetes_secret_says_how_to_get_it_out():
    dropin = nth_migrate.render_dropin(nth_migrate.convert({"webhookURLSecretName": "nth-webhook"}), "t", "")
    assert "#WEBHOOK_URL_FILE=" in dropin and "jsonpath='{.data.webhookurl}'" in dropin


def test_webhook_headers_by_name_only_and_content_type_alone_needs_nothing():
    conversion = nth_migrate.convert({"webhookHeaders": '{"Content-type":"application/json","Authorization":"Bearer s3cr3t"}'})
    dropin = nth_migrate.render_dropin(conversion, "test", "")
    assert "s3cr3t" not in dropin + nth_migrate.render_notes(conversion)
    assert "headers: Authorization" in dropin and "#WEBHOOK_HEADERS_FILE=" in dropin
    plain = nth_migrate.convert({"webhookHeaders": '{"Content-type":"application/json"}'})
    assert not [s for s in plain.settings if s.key == "WEBHOOK_HEADERS_FILE"]
    assert "webhookHeaders" in plain.mapped


def test_a_go_template_is_pointed_at_a_rewrite():
    conversion = nth_migrate.convert({"webhookTemplate": '{"text":"{{ .EventID }}"}'})
    template = next(s for s in conversion.settings if s.key == "WEBHOOK_TEMPLATE")
    assert not template.active and "${field}" in template.comment


def test_prometheus_becomes_a_textfile_suggestion():
    conversion = nth_migrate.convert({"enablePrometheusServer": True, "prometheusServerPort": 9092})
    metrics = next(s for s in conversion.settings if s.key == "METRICS_TEXTFILE")
    assert not metrics.active
    port = next(listed for listed in conversion.listed if "prometheusServerPort" in listed.keys)
    assert "opens no port" in port.reason and port.set_by_user == ("prometheusServerPort",)


def test_queue_mode_is_said_first():
    conversion = nth_migrate.convert({"enableSqsTerminationDraining": True, "queueURL": "https://sqs.invalid/1/q"})
    assert "queue-processor" in conversion.warnings[0]
    queue = next(listed for listed in conversion.listed if "queueURL" in listed.keys)
    assert "queueURL" in queue.set_by_user


def test_an_unknown_value_is_listed_as_the_users():
    conversion = nth_migrate.convert(effective_values([], ["someFutureKey.deep=1"]))
    unknown = next(listed for listed in conversion.listed if listed.reason == nth_chart.UNKNOWN)
    assert unknown.keys == ("someFutureKey.deep",) and unknown.set_by_user == ("someFutureKey.deep",)


def test_behaviour_differences_of_mapped_values_are_listed():
    notes = nth_migrate.render_notes(nth_migrate.convert({"dryRun": True}))
    assert "- dryRun (yours): mapped, but it differs: NTH only logs" in notes
    for key in ("podTerminationGracePeriod", "ignoreDaemonSets", "nodeTerminationGracePeriod",
                "enableScheduledEventDraining", "taintNode"):
        assert key in notes


def test_every_row_names_real_nodeagent_keys():
    for row in nth_chart.ROWS:
        for key in row.nodeagent:
            assert key in config.KEYS_BY_NAME, (row.key, key)
        assert row.nodeagent or row.note, row.key
