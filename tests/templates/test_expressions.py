"""Template expressions: what ARM's functions return, and ARM's errors for what they refuse; the parser and the
evaluator are property-tested with arbitrary text (never anything but a TemplateError)."""

from __future__ import annotations

import contextlib
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acrlocal.arm.templates.errors import TemplateError
from acrlocal.arm.templates.expressions import Call, Literal, Member, parse
from acrlocal.arm.templates.functions import Scope
from acrlocal.arm.templates.values import expression, resolve
from tests.templates.conftest import SUB, FixedEnvironment


def ev(text: str, **parameters: Any) -> Any:
    env = FixedEnvironment(deployed={"/subscriptions/x/resourceGroups/rg1/providers/Microsoft.Network/"
                                     "publicIPAddresses/ip1": {"properties": {"ipAddress": "127.77.0.1"}}})
    return expression(text, Scope(env=env, parameters=parameters, runtime=True))


@pytest.mark.parametrize(("text", "value"), [
    ("[concat('a', 'b', 1, true())]", "ab1True"),
    ("[concat(createArray(1, 2), createArray(3))]", [1, 2, 3]),
    ("[format('{0}-{1:D3}', 'vm', 7)]", "vm-007"),
    ("[format('{{literal}} {0}', 'x')]", "{literal} x"),
    ("[toLower('MyVM')]", "myvm"),
    ("[toUpper('a')]", "A"),
    ("[if(equals(1, 1), 'yes', 'no')]", "yes"),
    ("[if(false(), reference('nothing'), 'lazy')]", "lazy"),
    ("[empty('')]", True), ("[empty(createObject())]", True), ("[empty(createArray(1))]", False),
    ("[contains('abc', 'b')]", True), ("[contains(createObject('Key', 1), 'key')]", True),
    ("[contains(createArray(1, 2), 3)]", False),
    ("[union(createObject('a', 1, 'n', createObject('x', 1)), createObject('b', 2, 'n', createObject('y', 2)))]",
     {"a": 1, "n": {"x": 1, "y": 2}, "b": 2}),
    ("[union(createArray(1, 2), createArray(2, 3))]", [1, 2, 3]),
    ("[json('{\"a\": [1, null]}').a[0]]", 1),
    ("[string(createObject('a', true()))]", '{"a":true}'),
    ("[string(true())]", "True"),
    ("[length('abc')]", 3), ("[length(createArray())]", 0),
    ("[split('a,b;c', createArray(',', ';'))]", ["a", "b", "c"]),
    ("[substring('hello', 1, 3)]", "ell"),
    ("[replace('a-b-c', '-', '')]", "abc"),
    ("[add(div(-7, 2), mod(-7, 2))]", -4),
    ("[range(2, 3)]", [2, 3, 4]),
    ("[padLeft(7, 3, '0')]", "007"),
    ("[startsWith('Microsoft', 'micro')]", True),
    ("[uri('https://a.example/x/', 'y.json')]", "https://a.example/x/y.json"),
    ("[base64ToString(base64('héllo'))]", "héllo"),
    ("[coalesce(null(), null(), 'c')]", "c"),
    ("[first(createArray('x', 'y'))]", "x"),
    ("[last('xyz')]", "z"),
    ("[resourceGroup().location]", "westus"),
    ("[subscription().subscriptionId]", SUB),
    ("[resourceId('Microsoft.Network/virtualNetworks/subnets', 'vnet', 'default')]",
     f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"),
    ("[resourceId('other', 'Microsoft.Network/publicIPAddresses', 'ip')]",
     f"/subscriptions/{SUB}/resourceGroups/other/providers/Microsoft.Network/publicIPAddresses/ip"),
    ("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'abc')]",
     f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/abc"),
    ("[extensionResourceId('/subscriptions/s/resourceGroups/r', 'Microsoft.Authorization/locks', 'l')]",
     "/subscriptions/s/resourceGroups/r/providers/Microsoft.Authorization/locks/l"),
    ("[filter(createArray(1, 2, 3, 4), lambda('x', greater(lambdaVariables('x'), 2)))]", [3, 4]),
    ("[map(range(0, 3), lambda('i', mul(lambdaVariables('i'), 10)))]", [0, 10, 20]),
    ("[reduce(createArray(1, 2, 3), 0, lambda('acc', 'x', add(lambdaVariables('acc'), lambdaVariables('x'))))]",
     6),
    ("[items(createObject('b', 2, 'a', 1))]", [{"key": "a", "value": 1}, {"key": "b", "value": 2}]),
    ("[cidrSubnet('10.0.0.0/16', 24, 3)]", "10.0.3.0/24"),
    ("[dateTimeAdd('2026-01-01T00:00:00Z', 'P1M2DT3H')]", "2026-02-03T03:00:00Z"),
    ("[tryGet(createObject('a', createObject('b', 1)), 'a', 'b')]", 1),
    ("[parameters('Size')]", "Standard_B1s"),
    ("[[not an expression]", "[not an expression]"),
    ("plain text", "plain text"),
])
def test_functions(text: str, value: Any) -> None:
    assert ev(text, size="Standard_B1s") == value


def test_unique_string_and_guid_are_deterministic_and_shaped() -> None:
    a = ev("[uniqueString(resourceGroup().id)]")
    assert a == ev("[uniqueString(resourceGroup().id)]")
    assert len(a) == 13 and set(a) <= set(string.ascii_lowercase + "234567")
    assert a != ev("[uniqueString(resourceGroup().id, 'x')]")
    g = ev("[guid(resourceGroup().id, 'role')]")
    assert len(g) == 36 and g == ev("[guid(resourceGroup().id, 'role')]") and g[14] == "5"


def test_parse_tree() -> None:
    assert parse("resourceGroup().location") == Member(Call("resourceGroup", ()), "location")
    assert parse("concat('it''s', -1)") == Call("concat", (Literal("it's"), Literal(-1)))


@pytest.mark.parametrize(("text", "message"), [
    ("[concat('a', )]", "the string character ')' at position '12' is not expected"),
    ("[concat('a']", "the expression ends unexpectedly"),
    ("['unterminated]", "is not terminated"),
    ("[nosuchfunction(1)]", "The template function 'nosuchfunction' is not valid"),
    ("[toLower(1)]", "expects its parameter to be of type 'String'. The provided value is of type 'Integer'"),
    ("[createObject('a', 1).b]", "The language expression property 'b' doesn't exist, available properties are 'a'"),
    ("[createArray(1)[3]]", "The language expression property array index '3' is out of bounds"),
    ("[div(1, 0)]", "cannot divide by zero"),
    ("[parameters('missing')]", "The template parameter 'missing' is not found"),
    ("[utcNow()]", "It can only be used with parameter default value"),
    ("[copyIndex()]", "The function can only be used in a resource with copy specified"),
    ("[substring('abc', 2, 5)]", "out of range"),
    ("[if(1, 2, 3)]", "expects its first parameter to be of type 'Boolean'"),
    ("[toLower('a', 'b')]", "does not take 2 argument(s)"),
    # widths that would build a gigabyte are refused before anything is built
    ("[format('{0,999999999}', 1)]", "width or precision of 999999999"),
    ("[format('{0,-999999999}', 1)]", "width or precision of -999999999"),
    ("[format('{0:D999999999}', 1)]", "width or precision of 999999999"),
    ("[format('{0,100000}{0,100000}', 1)]", "produced more than 131072 characters"),
])
def test_errors_are_arms(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        ev(text)
    assert message in err.value.message


def test_property_copy_loops_expand() -> None:
    value = {"properties": {"copy": [{"name": "subnets", "count": 2,
                                      "input": {"name": "[concat('s', copyIndex('subnets'))]"}}], "other": 1}}
    assert resolve(value, Scope(env=FixedEnvironment())) == {"properties": {"subnets": [{"name": "s0"},
                                                                                        {"name": "s1"}], "other": 1}}


# -- properties: arbitrary text never escapes as anything but a TemplateError --------------------------------

NAMES = st.sampled_from(["concat", "format", "if", "resourceId", "parameters", "variables", "createArray",
                         "createObject", "union", "json", "string", "int", "length", "substring", "split", "range",
                         "add", "div", "mod", "equals", "less", "contains", "empty", "first", "last", "copyIndex",
                         "reference", "listKeys", "map", "filter", "lambda", "lambdaVariables", "reduce", "sort",
                         "toObject", "items", "padLeft", "dateTimeAdd", "cidrSubnet", "parseCidr", "guid",
                         "uniqueString", "base64ToJson", "dataUriToString", "tryGet", "not", "and", "or", "coalesce",
                         "intersection", "flatten", "join", "skip", "take", "min", "max", "bool", "true", "null"])


def _expressions() -> st.SearchStrategy[str]:
    literal = st.one_of(st.integers(-2**70, 2**70).map(str),
                        st.text(max_size=12).map(lambda s: "'" + s.replace("'", "''") + "'"),
                        st.sampled_from(["true", "false", "null"]))
    return st.recursive(literal, lambda inner: st.one_of(
        st.tuples(NAMES, st.lists(inner, max_size=4)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, st.sampled_from(["a", "length", "x"])).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
    ), max_leaves=12)


def _evaluate_any(text: str) -> None:
    env = FixedEnvironment(defer=False)
    scope = Scope(env=env, parameters={"p": 1}, runtime=True)
    try:
        expression(text, scope)
    except TemplateError:
        pass
    except KeyError:
        pass  # the fixed environment's table of deployed resources does not hold the id asked for


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_arbitrary_text_parses_or_raises_template_error(text: str) -> None:
    with contextlib.suppress(TemplateError):
        parse(text)
    _evaluate_any("[" + text + "]")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=600, deadline=None)
@given(_expressions())
def test_arbitrary_expressions_evaluate_or_raise_template_error(text: str) -> None:
    parse(text)  # generated text is always well-formed
    _evaluate_any("[" + text + "]")
