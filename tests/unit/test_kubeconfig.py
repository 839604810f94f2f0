"""kube/kubeconfig.py's pure parts: which exec section TokenKeeper takes over, and YAML errors
that say where the problem is without quoting the file (it can hold a token or a key)."""

from __future__ import annotations

import pytest
import yaml

from nodeagent.kube.errors import KubeconfigInvalid
from nodeagent.kube.kubeconfig import _pop_exec_config, _yaml_problem

EXEC = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws", "args": ["eks", "get-token"]}


def _config(current: str = "ctx") -> dict:
    return {
        "current-context": current,
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "kubelet"}}],
        "users": [
            {"name": "other", "user": {"exec": {"command": "not-this-one"}}},
            {"name": "kubelet", "user": {"exec": dict(EXEC)}},
        ],
    }


def test_the_current_users_exec_section_is_taken_out():
    config = _config()
    assert _pop_exec_config(config) == EXEC
    assert "exec" not in config["users"][1]["user"]
    assert config["users"][0]["user"] == {"exec": {"command": "not-this-one"}}  # another user's: kept


def test_a_single_context_is_used_when_current_context_names_none():
    config = _config(current="missing")
    assert _pop_exec_config(config) == EXEC
    assert config["current-context"] == "ctx"


def test_a_user_without_exec_gives_none():
    config = _config()
    del config["users"][1]["user"]["exec"]
    assert _pop_exec_config(config) is None


@pytest.mark.parametrize("config, problem", [
    ({"current-context": "x", "contexts": "ctx", "users": []}, "contexts/users are not lists"),
    ({"current-context": "x", "contexts": [], "users": []}, "no context named 'x'"),
])
def test_a_kubeconfig_without_a_usable_context_is_refused(config, problem):
    with pytest.raises(KubeconfigInvalid, match=problem):
        _pop_exec_config(config)


def test_yaml_problem_says_where_but_never_quotes_the_file():
    text = "users:\n- name: kubelet\n  user:\n    token: s3cr3t-t0ken: oops\n"
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(text)
    problem = _yaml_problem(caught.value)
    assert problem.startswith("mapping values are not allowed here at line 4, column ")
    assert "s3cr3t" not in problem


def test_yaml_problem_keeps_yaml_punctuation_and_hides_words():
    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load("a: [1, 2\nb: secretword}\n")
    problem = _yaml_problem(caught.value)
    assert "secretword" not in problem and "line " in problem
