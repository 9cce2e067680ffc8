"""Tests for the cluster query language parser and evaluator."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from localecs.querylang import (
    And,
    Condition,
    Not,
    Or,
    QuerySyntaxError,
    matches,
    member_of,
    parse,
    satisfies_placement_constraints,
)

# A container instance as DescribeContainerInstances returns it, plus the
# task groups of the tasks running on it.
WEB = {
    "containerInstanceArn": "arn:aws:ecs:us-east-1:123456789012:container-instance/c/1",
    "ec2InstanceId": "i-abcd1234",
    "agentConnected": True,
    "versionInfo": {"agentVersion": "1.14.2"},
    "registeredAt": datetime(2018, 2, 10, 12, 0, tzinfo=UTC),
    "runningTasksCount": 1,
    "attributes": [
        {"name": "ecs.instance-type", "value": "t3.medium"},
        {"name": "ecs.availability-zone", "value": "us-east-1a"},
        {"name": "ecs.os-type", "value": "linux"},
        {"name": "role", "value": "web"},
        {"name": "slots", "value": "12"},
        {"name": "ecs.capability.flag"},
    ],
    "taskGroups": ["service:production", "family:web"],
}
BATCH = {
    "ec2InstanceId": "i-wxyx7890",
    "agentConnected": False,
    "versionInfo": {"agentVersion": "1.70.0"},
    "registeredAt": 1_700_000_000.0,  # epoch seconds, as in moto's raw JSON
    "runningTasksCount": 0,
    "attributes": {"ecs.instance-type": "g2.2xlarge", "ecs.availability-zone": "us-east-1d", "slots": "9"},
}


@pytest.mark.parametrize(
    ("expression", "web", "batch"),
    [
        # equality and inequality, symbol and word forms
        ("attribute:role == web", True, False),
        ("attribute:role equals web", True, False),
        ("attribute:role != web", False, True),
        ("attribute:role not_equals web", False, True),
        ("ec2InstanceId == i-abcd1234", True, False),
        ("agentConnected == true", True, False),
        ("agentConnected == TRUE", True, False),
        ("agentConnected != true", False, True),
        ("agentConnected == false", False, True),
        # ordering
        ("runningTasksCount > 0", True, False),
        ("runningTasksCount greater_than 0", True, False),
        ("runningTasksCount >= 1", True, False),
        ("runningTasksCount < 1", False, True),
        ("runningTasksCount less_than_equal 0", False, True),
        ("agentVersion < 1.14.5", True, False),
        ("agentVersion >= 1.20.0", False, True),
        ("agentVersion == 1.14.2", True, False),
        ("registeredAt < 2018-02-13", True, False),
        ("registeredAt > 2018-02-10T11:59:59Z", True, True),
        ("registeredAt <= 2018-02-10T12:00:00+00:00", True, False),
        ("registeredAt greater_than_equal 2018-02-10T12:00:00", True, True),
        ("attribute:slots > 10", True, False),  # numeric, not textual ("9" > "10")
        # existence
        ("attribute:role exists", True, False),
        ("attribute:role !exists", False, True),
        ("attribute:role not_exists", False, True),
        ("attribute:ecs.capability.flag exists", True, False),
        ("task:group exists", True, False),
        # lists
        ("attribute:ecs.availability-zone in [us-east-1a, us-east-1b]", True, False),
        ("attribute:ecs.availability-zone !in [us-east-1a, us-east-1b]", False, True),
        ("attribute:ecs.availability-zone not_in [us-east-1a]", False, True),
        ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", True, True),
        ('ec2InstanceId in ["i-nope"]', False, False),
        ("agentConnected in [true]", True, False),
        # patterns (full match)
        ("attribute:ecs.instance-type =~ t3.*", True, False),
        ("attribute:ecs.instance-type matches g2.*", False, True),
        ("attribute:ecs.instance-type !~ t3.*", False, True),
        ("attribute:ecs.instance-type not_matches t3.*", False, True),
        ("attribute:ecs.instance-type =~ t3", False, False),
        ("attribute:ecs.instance-type =~ '(t3|g2)\\..*'", True, True),
        ("ec2InstanceId =~ i-abcd.*", True, False),
        # task groups: any task on the instance
        ("task:group == service:production", True, False),
        ("task:group == family:web", True, False),
        ("task:group != database", True, True),
        ("not(task:group == database)", True, True),
        ("task:group in [database, family:web]", True, False),
        # absent subjects: positive operators false, negative ones true
        ("attribute:missing == x", False, False),
        ("attribute:missing != x", True, True),
        ("attribute:missing =~ .*", False, False),
        ("attribute:missing !in [x]", True, True),
        ("attribute:missing > 0", False, False),
    ],
)
def test_condition_evaluates_against_instances(expression: str, web: bool, batch: bool) -> None:
    """Each operator, in each spelling, selects exactly the instances it should."""
    assert (matches(expression, WEB), matches(expression, BATCH)) == (web, batch)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # and binds tighter than or
        ("attribute:role == batch and runningTasksCount == 1 or agentConnected == true", True),
        ("agentConnected == true or attribute:role == batch and runningTasksCount == 9", True),
        ("(agentConnected == true or attribute:role == batch) and runningTasksCount == 9", False),
        # not binds tighter than and / or
        ("not attribute:role == web and runningTasksCount == 1", False),
        ("not (attribute:role == batch and runningTasksCount == 1)", True),
        ("not attribute:role == batch or runningTasksCount == 9", True),
        ("not not agentConnected == true", True),
        # symbol forms of the connectives
        ("agentConnected == false || attribute:role == web && runningTasksCount == 1", True),
        ("!(agentConnected == true)", False),
        ("!agentConnected == false", True),
        # keywords are case-insensitive, nesting is free
        ("((attribute:role == web) AND (runningTasksCount == 1)) OR agentConnected == false", True),
    ],
)
def test_precedence_and_grouping(expression: str, expected: bool) -> None:
    """not binds tighter than and, and tighter than or; parentheses override both."""
    assert matches(expression, WEB) is expected


def test_precedence_shapes_the_tree() -> None:
    """`a or b and not c` parses as `a or (b and (not c))`."""
    tree = parse("agentConnected == true or attribute:role == web and not runningTasksCount == 0")
    assert isinstance(tree, Or)
    assert isinstance(tree.left, Condition)
    assert isinstance(tree.right, And)
    assert isinstance(tree.right.right, Not)


@pytest.mark.parametrize(
    "expression",
    [
        "attribute:ecs.instance-type == t2.small",
        "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
        "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d",
        "task:group == service:production",
        "not(task:group == database)",
        "runningTasksCount == 1",
        "agentVersion < 1.14.5",
        "registeredAt < 2018-02-13",
        "ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']",
        "agentConnected == true and (attribute:ecs.instance-type =~ t3.*)",
        "(attribute:ecs.instance-type == t2.small or attribute:role == web) and agentConnected == true",
    ],
)
def test_documented_examples_parse_and_round_trip(expression: str) -> None:
    """Every example of the AWS guide parses, and its printed form parses to the same tree."""
    tree = parse(expression)
    assert parse(str(tree)) == tree


def test_documented_compound_example_selects_g2_outside_us_east_1d() -> None:
    """The guide's compound example selects G2 hosts not in us-east-1d."""
    expression = "attribute:ecs.instance-type =~ g2.* and attribute:ecs.availability-zone != us-east-1d"
    elsewhere = dict(BATCH, attributes={"ecs.instance-type": "g2.8xlarge", "ecs.availability-zone": "us-east-1c"})
    assert [matches(expression, host) for host in (WEB, BATCH, elsewhere)] == [False, False, True]


def test_subjects_lists_what_an_expression_reads() -> None:
    """`subjects` names every subject, so callers fetch task groups only when needed."""
    tree = parse("attribute:role == web or (not task:group == db and agentConnected == true)")
    assert tree.subjects == {"attribute:role", "task:group", "agentConnected"}


def test_flat_instance_fields_are_accepted() -> None:
    """A top-level agentVersion and a dict of attributes work as well as the API shape."""
    flat: dict[str, Any] = {"agentVersion": "1.2.3", "attributes": {"role": "web"}}
    assert matches("agentVersion < 1.10.0 and attribute:role == web", flat)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("agentConnected", "expected an operator"),
        ("agentConnected ==", "expected a value"),
        ("agentConnected = true", "expected an operator"),
        ("colour == red", "unknown subject 'colour'"),
        ("AgentConnected == true", "unknown subject"),
        ("agentConnected > true", "operator '>' is not valid for agentConnected"),
        ("agentVersion =~ 1.*", "operator '=~' is not valid for agentVersion"),
        ("agentConnected == maybe", "true or false"),
        ("runningTasksCount > many", "integer"),
        ("agentVersion < latest", "version"),
        ("registeredAt < yesterday", "date"),
        ("registeredAt < 2018-13-45", "date"),
        ("attribute:role in web", "argument list"),
        ("attribute:role in [web", "expected ',' or ']'"),
        ("attribute:role in []", "expected a value"),
        ("attribute:role == 'web", "unterminated"),
        ("attribute:role =~ '(unclosed'", "invalid pattern"),
        ("(attribute:role == web", "expected ')'"),
        ("attribute:role == web)", "unexpected"),
        ("attribute:role == web and", "expected a subject"),
        ("attribute:role == web or or agentConnected == true", "expected a subject"),
        ("attribute:role == web agentConnected == true", "unexpected"),
        ("attribute: == web", "expected attribute:NAME"),
    ],
)
def test_syntax_errors_are_reported_clearly(expression: str, message: str) -> None:
    """Invalid expressions raise QuerySyntaxError (a ValueError) that says what is wrong."""
    with pytest.raises(QuerySyntaxError, match=re.escape(message)) as caught:
        parse(expression)
    assert isinstance(caught.value, ValueError)
    assert repr(expression) in str(caught.value)


def test_syntax_error_reports_position() -> None:
    """The error carries the offset of the offending text."""
    with pytest.raises(QuerySyntaxError) as caught:
        parse("agentConnected == true and colour == red")
    assert caught.value.position == len("agentConnected == true and ")


def test_member_of_and_placement_constraints() -> None:
    """memberOf constraints filter hosts; distinctInstance never excludes one."""
    assert member_of("attribute:role == web", WEB)
    assert not member_of("attribute:role == web", BATCH)
    constraints = [{"type": "distinctInstance"}, {"type": "memberOf", "expression": "attribute:role == web"}]
    assert satisfies_placement_constraints(WEB, constraints)
    assert not satisfies_placement_constraints(BATCH, constraints)
    assert satisfies_placement_constraints(BATCH, [{"type": "distinctInstance"}])
    assert satisfies_placement_constraints(BATCH, None)


def test_invalid_member_of_expression_raises() -> None:
    """A malformed memberOf expression is an error, not a silent match or miss."""
    with pytest.raises(QuerySyntaxError):
        satisfies_placement_constraints(WEB, [{"type": "memberOf", "expression": "attribute:role =="}])
