"""Helm's values handling as `nodeagent migrate-from-nth` reads it: -f files merged in order, then
--set pairs in Helm's syntax. Pure: no files, no processes."""

import pytest

from nodeagent.helm_values import (
    ValuesError,
    dotted,
    effective_values,
    flatten,
    merge,
    parse_key,
    parse_set,
    parse_values_yaml,
)


@pytest.mark.parametrize("argument,expected", [
    ("nodeSelector.lifecycle=Ec2Spot", {"nodeSelector": {"lifecycle": "Ec2Spot"}}),  # the spot workshop's
    ("a.b.c=v", {"a": {"b": {"c": "v"}}}),
    ("a=1,b=two,c=true,d=false,e=0", {"a": 1, "b": "two", "c": True, "d": False, "e": 0}),
    ("a={x,y,3}", {"a": ["x", "y", 3]}),
    ("a={}", {"a": []}),
    ("a={x,y},b=z", {"a": ["x", "y"], "b": "z"}),
    (r"podAnnotations.eks\.amazonaws\.com/role-arn=arn:aws:iam::1:role/r",
     {"podAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}}),
    (r"a=x\,y", {"a": "x,y"}),
    ("a=", {"a": ""}),
    ("a=007", {"a": "007"}),  # a leading zero keeps it a string, as in Helm
    ("a=-5", {"a": -5}),
    ("tolerations[0].operator=Exists", {"tolerations": [{"operator": "Exists"}]}),
    ("a[1]=y", {"a": [None, "y"]}),
    ("a=x=y", {"a": "x=y"}),  # the first '=' ends the key
])
def test_set_syntax(argument, expected):
    assert effective_values([], [argument]) == expected


def test_set_applies_after_files_and_later_wins():
    files = [{"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"c": 3}, "l": [9]}]
    values = effective_values(files, ["a.d=4", "a.b=5,a.b=6"])
    assert values == {"a": {"b": 6, "c": 3, "d": 4}, "l": [9]}  # maps merge, lists are replaced


def test_null_removes_a_key_in_a_file_and_in_set():
    assert merge({"a": 1, "b": {"c": 1, "d": 2}}, {"a": None, "b": {"c": None}}) == {"b": {"d": 2}}
    assert effective_values([{"a": {"b": 1, "c": 2}}], ["a.b=null"]) == {"a": {"c": 2}}


@pytest.mark.parametrize("argument,problem", [
    ("nodeSelector.lifecycle", "has no value"),
    ("a=1,b", "has no value"),
    ("a={x,y", "'{' without '}'"),
    ("a=x}", "'}' without '{'"),
    ("a..b=1", "empty key name"),
    (".a=1", "empty key name"),
    ("a.=1", "empty key name"),
    ("a[x]=1", "whole number"),
    ("a[99999999]=1", "too large"),
    ("[0]=1", "empty key name"),
    ("a[0]b=1", "expected '.' or '['"),
])
def test_bad_set_syntax_names_the_argument(argument, problem):
    with pytest.raises(ValuesError) as caught:
        effective_values([], [argument])
    assert problem in str(caught.value)
    assert repr(argument) in str(caught.value)


def test_parse_key_and_dotted_round_trip():
    path = parse_key(r"a.b\.c[2].d", "arg")
    assert path == ("a", "b.c", 2, "d")
    assert dotted(path) == r"a.b\.c[2].d"
    assert parse_set(dotted(path) + "=v") == [(path, "v")]


def test_values_yaml():
    assert parse_values_yaml("", "v.yaml") == {}
    assert parse_values_yaml("# only a comment\n", "v.yaml") == {}
    assert parse_values_yaml("a:\n  b: 1\n", "v.yaml") == {"a": {"b": 1}}


@pytest.mark.parametrize("text,problem", [
    ("a: [1, 2\n", "v.yaml: not valid YAML at line 2"),
    ("a: b: c\n", "v.yaml: not valid YAML at line 1"),
    ("- a\n- b\n", "the top level is a list, expected a mapping"),
    ("just text\n", "the top level is a str"),
])
def test_bad_values_yaml_names_the_file(text, problem):
    with pytest.raises(ValuesError) as caught:
        parse_values_yaml(text, "v.yaml")
    assert problem in str(caught.value)


def test_flatten_keeps_empty_maps_and_lists_as_leaves():
    leaves = flatten({"a": {"b": {}, "c": [1]}, "d": {"e": {"f": None}}})
    assert leaves == {("a", "b"): {}, ("a", "c"): [1], ("d", "e", "f"): None}
