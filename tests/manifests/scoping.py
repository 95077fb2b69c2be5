"""The webhook's scoping, evaluated: namespace/object selectors and a small CEL for matchConditions.

Why it exists: which pods can be blocked while Ferry is down is decided by the
MutatingWebhookConfiguration; the tests evaluate it against sample and recorded
namespaces and pods instead of eyeballing it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.paths import FIXTURES
from tests.support.pods import make_pod

# --- MutatingWebhookConfiguration: evaluated scoping ---------------------------------------
#
# The API server calls an entry when its namespaceSelector matches the pod's
# namespace labels, its objectSelector matches the pod's labels, and every
# matchCondition is true. Below: a label-selector evaluator and a small
# evaluator for the CEL subset these conditions use (has(), map `in`, index,
# ==, !=, !, &&, ||, string literals), with CEL's rule that reading a missing
# map key is an *error*. An error in a matchCondition with failurePolicy Fail
# rejects the pod, so the tests also assert the conditions never error.


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


class CelError(Exception):
    """Evaluation error (e.g. no such key); the API server applies failurePolicy."""


_CEL_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>&&|\|\||==|!=|[!().\[\]])|(?P<id>[A-Za-z_][A-Za-z0-9_]*))\s*"
)
Node = tuple[Any, ...]


# CEL's strings extension (on in Kubernetes): only the methods Ferry's conditions use. CEL's
# trim() removes Unicode white space and lowerAscii() lowers A-Z only.
_CEL_STRING_METHODS: dict[str, Any] = {
    "trim": str.strip,
    "lowerAscii": lambda text: "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text),
}


class MiniCel:
    """Parser and evaluator for the CEL subset used in Ferry's matchConditions.

    Grammar: or := and ('||' and)* ; and := unary ('&&' unary)* ;
    unary := '!' unary | operand (('==' | '!=' | 'in') operand)? ;
    operand := 'string' | '(' or ')' | 'has' '(' select ')' | select ;
    select := ident ('.' ident | '.' method '(' ')' | '[' or ']')*   (method: trim, lowerAscii)
    Anything else is rejected, so a new construct in the manifest fails loudly.
    """

    def __init__(self, expression: str) -> None:
        self.tokens: list[str] = []
        pos = 0
        while pos < len(expression):
            match = _CEL_TOKEN.match(expression, pos)
            if not match or match.end() == pos:
                raise ValueError(f"unsupported CEL at {expression[pos:]!r}")
            self.tokens.append(match.group(match.lastgroup or ""))
            pos = match.end()
        self.pos = 0
        self.tree = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unsupported CEL: trailing {self.tokens[self.pos :]}")

    # -- parsing
    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self.tokens[self.pos]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, got {token!r}")
        self.pos += 1
        return token

    def _or(self) -> Node:
        node = self._and()
        while self._peek() == "||":
            self._take()
            node = ("or", node, self._and())
        return node

    def _and(self) -> Node:
        node = self._unary()
        while self._peek() == "&&":
            self._take()
            node = ("and", node, self._unary())
        return node

    def _unary(self) -> Node:
        if self._peek() == "!":
            self._take()
            return ("not", self._unary())
        left = self._operand()
        if self._peek() in ("==", "!=", "in"):
            return (self._take(), left, self._operand())
        return left

    def _operand(self) -> Node:
        token = self._take()
        if token.startswith("'"):
            return ("lit", token[1:-1].replace("\\'", "'"))
        if token == "(":
            node = self._or()
            self._take(")")
            return node
        if token == "has":
            self._take("(")
            select = self._select(self._take())
            self._take(")")
            if not select[2] or select[2][-1][0] != "field":
                raise ValueError("has() needs a field selection")
            return ("has", select)
        if re.fullmatch(r"[A-Za-z_]\w*", token):
            return self._select(token)
        raise ValueError(f"unsupported CEL token {token!r}")

    def _select(self, name: str) -> Node:
        steps: list[tuple[str, Any]] = []
        while self._peek() in (".", "["):
            if self._take() == ".":
                field = self._take()
                if self._peek() == "(":  # a string method of the strings extension: x.trim(), x.lowerAscii()
                    self._take("(")
                    self._take(")")
                    if field not in _CEL_STRING_METHODS:
                        raise ValueError(f"unsupported CEL method {field!r}")
                    steps.append(("call", field))
                    continue
                steps.append(("field", field))
            else:
                steps.append(("index", self._or()))
                self._take("]")
        return ("select", name, steps)

    # -- evaluation
    def evaluate(self, variables: dict[str, Any]) -> Any:
        return self._eval(self.tree, variables)

    def _eval(self, node: Node, env: dict[str, Any]) -> Any:
        op = node[0]
        if op in ("or", "and"):
            # CEL's && and || are commutative over errors: false && error is
            # false, true || error is true, in either order.
            decisive = op == "or"
            results: list[Any] = []
            for side in node[1:]:
                try:
                    results.append(bool(self._eval(side, env)))
                except CelError as exc:
                    results.append(exc)
            if decisive in results:
                return decisive
            for result in results:
                if isinstance(result, CelError):
                    raise result
            return not decisive
        if op == "not":
            return not self._eval(node[1], env)
        if op == "lit":
            return node[1]
        if op in ("==", "!="):
            equal = self._eval(node[1], env) == self._eval(node[2], env)
            return equal if op == "==" else not equal
        if op == "in":
            container = self._eval(node[2], env)
            if not isinstance(container, dict | list):
                raise CelError("'in' needs a map or a list")
            return self._eval(node[1], env) in container
        if op == "has":
            _, name, steps = node[1]
            parent = self._read(name, steps[:-1], env)
            return isinstance(parent, dict) and steps[-1][1] in parent
        if op == "select":
            return self._read(node[1], node[2], env)
        raise AssertionError(op)

    def _read(self, name: str, steps: list[tuple[str, Any]], env: dict[str, Any]) -> Any:
        if name not in env:
            raise CelError(f"undeclared reference to {name!r}")
        value = env[name]
        for kind, key in steps:
            if kind == "call":
                if not isinstance(value, str):
                    raise CelError(f"no such overload: {key} on {type(value).__name__}")
                value = _CEL_STRING_METHODS[key](value)
                continue
            if kind == "index":
                key = self._eval(key, env)
            if not isinstance(value, dict) or key not in value:
                raise CelError(f"no such key: {key}")
            value = value[key]
        return value


def called_entries(hooks: dict[str, dict[str, Any]], namespace: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    ns_labels = namespace["metadata"].get("labels", {})
    called = []
    for name, hook in hooks.items():
        if not selector_matches(hook.get("namespaceSelector"), ns_labels):
            continue
        if not selector_matches(hook.get("objectSelector"), pod["metadata"].get("labels", {})):
            continue
        results = [MiniCel(c["expression"]).evaluate({"object": pod}) for c in hook.get("matchConditions", [])]
        if all(results):
            called.append(name)
    return called


def _namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name, **(labels or {})}}}


def _pod(annotations: dict[str, str] | None) -> dict[str, Any]:
    return make_pod(annotations, [{"name": "a", "image": "a"}], name="p", labels={"app": "x"})


def recorded_namespaces() -> dict[str, dict[str, Any]]:
    listing = json.loads((FIXTURES / "namespaces-list.json").read_text())
    return {item["metadata"]["name"]: item for item in listing["items"]}
