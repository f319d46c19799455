"""``authz-list``: ordered rules, the first match decides.

Properties (QEMU's QOM types in brackets):

``policy`` [``QAuthZListPolicy``]
    ``deny`` (the default) or ``allow``: the answer when no rule matches.
``rules`` [``QAuthZListRule``, which is the *list*]
    A list of ``{"match": str, "policy": "deny"|"allow", "format"?:
    "exact"|"glob"}``. An omitted ``format`` means ``exact``, and reads
    back omitted. ``glob`` is GLib's ``g_pattern_match_simple``
    (:mod:`qomhost.objects.authz.glob`), not :mod:`fnmatch`.

Both can be changed at run time (``qom-set``; ``rules`` replaces the whole
list). The rules can be given as JSON (``object-add``, ``-object '{...}'``)
and with dotted keys in keyval syntax (HMP ``object_add
authz-list,id=a,rules.0.match=fred,rules.0.policy=allow``); QemuOpts, the
``qemu-system -object`` syntax, cannot express a list of structs.

Deciding
--------
QEMU walks the list for every check. Here a set of rules is compiled once,
when it is set, into a :class:`CompiledRules`:

* exact rules (and globs without a wildcard) go into a dict from the
  string to the index of its *first* rule;
* each glob is indexed by the longest literal run that every match has at
  a fixed place: in the text before its first ``*`` (``grp7*``,
  ``?admin3*``, ``caf?-12``) or after its last one (``*@corp.example``,
  ``svc-*-9.example``), counted from the start or from the end
  (:func:`~qomhost.objects.authz.glob.anchored_literal`). There is one
  dict per place (end, distance and length), from the literal to its
  globs in rule order. Globs with no such literal (``*``, ``*abc*``) form
  one more bucket that every identity scans;
* a decision looks the identity up in the exact dict, then, for each
  place, cuts the identity's text there and scans only the globs indexed
  under that text, each bucket only up to the best index found so far,
  and takes the smallest matching index.

That is the same answer as the first-match loop (``decide_plain`` keeps
that loop, with the reference glob, for comparison), at a cost that
depends on how many rules could match rather than on how many there are.
A compiled set never changes its rules (only a cache of glob matchers
fills in) and is replaced by a single assignment, so a check running in
another thread sees the old rules or the new ones, never a mixture.

Where QEMU misbehaves
---------------------
A ``qom-set rules`` that fails QEMU's checks leaves QEMU 7.2 with an
*empty* list (its setter frees the old list first). qomhost reports the
same error and keeps the previous rules.
"""

from __future__ import annotations

from qomhost.errors import OptsError, QemuError
from qomhost.objects.authz.base import QAuthZ
from qomhost.objects.authz.glob import anchored_literal, compile_glob, g_pattern_match_simple
from qomhost.qapi.schema import EnumKind, Kind, Member
from qomhost.qom.object import ObjectProperty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, ClassVar

__all__ = [
    "AUTHZ_LIST_FORMAT",
    "AUTHZ_LIST_POLICY",
    "RULES",
    "CompiledRules",
    "Decision",
    "QAuthZList",
    "Rule",
    "RuleListKind",
]

AUTHZ_LIST_POLICY = EnumKind("QAuthZListPolicy", ("deny", "allow"))
AUTHZ_LIST_FORMAT = EnumKind("QAuthZListFormat", ("exact", "glob"))

_POLICIES = AUTHZ_LIST_POLICY.values
_FORMATS = AUTHZ_LIST_FORMAT.values


class Rule:
    """One ``QAuthZListRule``. ``format`` is ``None`` when it was not given."""

    __slots__ = ("format", "match", "policy")

    def __init__(self, match: str, policy: str, format: str | None = None) -> None:
        self.match = match
        self.policy = policy
        self.format = format

    @property
    def is_glob(self) -> bool:
        return self.format == "glob"

    def to_qapi(self) -> dict[str, object]:
        """The rule as ``qom-get`` shows it (``format`` only when it was given)."""
        out: dict[str, object] = {"match": self.match, "policy": self.policy}
        if self.format is not None:
            out["format"] = self.format
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        return (self.match, self.policy, self.format) == (other.match, other.policy, other.format)

    def __hash__(self) -> int:
        return hash((self.match, self.policy, self.format))

    def __repr__(self) -> str:
        fmt = "" if self.format is None else f", format={self.format!r}"
        return f"Rule({self.match!r}, {self.policy!r}{fmt})"


class Decision:
    """The outcome of one check and what caused it.

    ``index`` and ``rule`` name the rule that matched; both are ``None``
    when no rule matched and the default ``policy`` decided.
    """

    __slots__ = ("allowed", "index", "rule")

    def __init__(self, allowed: bool, index: int | None, rule: Rule | None) -> None:
        self.allowed = allowed
        self.index = index
        self.rule = rule

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.allowed, self.index, self.rule) == (other.allowed, other.index, other.rule)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Decision(allowed={self.allowed}, index={self.index}, rule={self.rule!r})"


# --- the rules as input ------------------------------------------------------------


def _type_error(name: str, expected: str) -> QemuError:
    return QemuError(f"Invalid parameter type for '{name}', expected: {expected}")


def _unexpected(keys: Iterable[str], visited: set[str], prefix: str) -> QemuError | None:
    """QEMU's error for the first member left over, in its hash-table order."""
    from qomhost.qapi.json import qdict_order
    from qomhost.qapi.schema import first_unvisited

    unknown = first_unvisited(qdict_order(keys), visited)
    if unknown is None:
        return None
    return QemuError(f"Parameter '{prefix}{unknown}' is unexpected")


def _visit_rule(item: dict[str, Any], prefix: str, scalar: Callable[[str, object], str]) -> Rule:
    """One ``QAuthZListRule`` from a dict, members in schema order.

    ``prefix`` is the element's name plus a dot (``rules[0].`` for JSON,
    ``rules.0.`` for keyval); ``scalar(full_name, value)`` checks that a
    value is a string, in the front end's words. An enum value error names
    the member alone, as QEMU's visitors do (``Parameter 'policy' does not
    accept value 'maybe'``).
    """
    if "match" not in item:
        raise QemuError(f"Parameter '{prefix}match' is missing")
    match = scalar(prefix + "match", item["match"])
    if "policy" not in item:
        raise QemuError(f"Parameter '{prefix}policy' is missing")
    policy = scalar(prefix + "policy", item["policy"])
    if policy not in _POLICIES:
        raise QemuError(f"Parameter 'policy' does not accept value '{policy}'")
    fmt: str | None = None
    if "format" in item:
        fmt = scalar(prefix + "format", item["format"])
        if fmt not in _FORMATS:
            raise QemuError(f"Parameter 'format' does not accept value '{fmt}'")
    if len(item) > 2 + (fmt is not None):
        err = _unexpected(item, {"match", "policy", "format"}, prefix)
        if err is not None:
            raise err
    return Rule(match, policy, fmt)


def _json_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "string")
    return value


def _keyval_str(name: str, value: object) -> str:
    if isinstance(value, (dict, list)):
        raise QemuError(f"Parameters '{name}.*' are unexpected")
    assert isinstance(value, str)
    return value


class RuleListKind(Kind):
    """The ``rules`` property: a list of ``QAuthZListRule``, from every front end.

    Values come out as a tuple of :class:`Rule`.
    """

    _fields = ("qom_type",)

    def __init__(self) -> None:
        self.qom_type = "QAuthZListRule"

    def from_json(self, name: str, value: object) -> object:
        if not isinstance(value, list):
            raise _type_error(name, "array")
        rules = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _type_error(f"{name}[{i}]", "object")
            rules.append(_visit_rule(item, f"{name}[{i}].", _json_str))
        return tuple(rules)

    def from_keyval(self, name: str, text: str) -> object:
        raise _type_error(name, "array")

    def from_keyval_tree(self, name: str, value: object) -> object:
        """Dotted keys (``rules.0.match=...``), already parsed into lists and dicts."""
        if not isinstance(value, list):
            raise _type_error(name, "array")
        rules = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise _type_error(f"{name}.{i}", "object")
            rules.append(_visit_rule(item, f"{name}.{i}.", _keyval_str))
        return tuple(rules)

    def from_opts_list(self, name: str, texts: Sequence[str]) -> object:
        """``rules=...`` given to QemuOpts (``qemu-system -object``).

        QEMU's opts visitor hands each scalar member of the first element
        the option's value, so ``rules=x`` fails as ``policy`` with
        ``Parameter 'policy' does not accept value 'x'``. When that value
        happens to be a valid policy, QEMU 7.2 reaches the optional
        ``format`` and aborts on an assertion; qomhost reports the list as
        unusable here instead.
        """
        text = texts[0]
        if text not in _POLICIES:
            raise QemuError(f"Parameter 'policy' does not accept value '{text}'")
        raise OptsError(
            f"Invalid parameter '{name}'",
            hint='A list of rules needs the JSON form: -object \'{"qom-type":"authz-list",...}\'',
        )

    def from_string(self, name: str, text: str) -> object:
        """HMP ``qom-set`` without ``-j``: only the empty list can be written so.

        QEMU 7.2's string visitor cannot visit a struct and crashes on any
        other value; qomhost refuses it.
        """
        if text == "":
            return ()
        raise QemuError(
            f"Parameter '{name}' expects a list of rules, which needs JSON (qom-set -j)"
        )

    def from_opts(self, name: str, text: str) -> object:
        return self.from_opts_list(name, [text])


RULES = RuleListKind()


# --- deciding ---------------------------------------------------------------------

_NONE = 1 << 62  # an index past any rule


class CompiledRules:
    """An indexed form of a rule list that answers like the loop.

    :meth:`first_match` returns the index of the first rule matching an
    identity, or ``-1``. Building costs a dict entry per rule and no other
    object for most of them, so that a large set is quick to replace; the
    matcher of a glob (:func:`~qomhost.objects.authz.glob.compile_glob`, no
    regular expressions) is made the first time an identity reaches it, and
    kept. That cache is the only state that changes after building, and
    threads racing to fill a slot build equal matchers.
    """

    __slots__ = ("_exact", "_heads", "_matchers", "_tails", "_wild", "allows", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.allows: tuple[bool, ...] = tuple(rule.policy == "allow" for rule in self.rules)
        exact: dict[str, int] = {}
        # (distance, distance + length) -> literal -> the indexes of its globs,
        # in rule order: a bare int for one glob, a list for more
        heads: dict[tuple[int, int], dict[str, int | list[int]]] = {}
        tails: dict[tuple[int, int], dict[str, int | list[int]]] = {}
        wild: list[int] = []
        for index, rule in enumerate(self.rules):
            pattern = rule.match
            if rule.format != "glob" or ("*" not in pattern and "?" not in pattern):
                # A glob without wildcards is an exact comparison too.
                if pattern not in exact:
                    exact[pattern] = index
                continue
            anchor = anchored_literal(pattern)
            if anchor is None:
                wild.append(index)
                continue
            from_end, distance, literal = anchor
            places = tails if from_end else heads
            place = (distance, distance + len(literal))
            table = places.get(place)
            if table is None:
                table = places[place] = {}
            found = table.get(literal)
            if found is None:
                table[literal] = index
            elif isinstance(found, int):
                table[literal] = [found, index]
            else:
                found.append(index)
        self._exact = exact
        # Shortest reach first: a decision stops at the first one longer
        # than the identity.
        self._heads = tuple((a, b, t) for (a, b), t in sorted(heads.items(), key=_reach))
        self._tails = tuple((a, b, t) for (a, b), t in sorted(tails.items(), key=_reach))
        self._wild = tuple(wild)
        self._matchers: list[Callable[[str], bool] | None] = [None] * len(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def _matcher(self, index: int) -> Callable[[str], bool]:
        """The matcher of glob rule ``index``, made on first use."""
        matcher = self._matchers[index]
        if matcher is None:
            matcher = self._matchers[index] = compile_glob(self.rules[index].match)
        return matcher

    def _scan(self, found: int | list[int], best: int, identity: str) -> int:
        """The first of the globs ``found`` before ``best`` that matches, else ``best``."""
        if isinstance(found, int):
            if found < best and self._matcher(found)(identity):
                return found
            return best
        for index in found:
            if index > best:
                break
            if self._matcher(index)(identity):
                return index
        return best

    def first_match(self, identity: str) -> int:
        """The index of the first rule that matches ``identity``; ``-1`` if none does."""
        best = self._exact.get(identity, _NONE)
        matchers = self._matchers
        for index in self._wild:
            if index > best:
                break
            if (matchers[index] or self._matcher(index))(identity):
                best = index
                break
        size = len(identity)
        for start, stop, table in self._heads:
            if stop > size:
                break
            found = table.get(identity[start:stop])
            if found is not None:
                best = self._scan(found, best, identity)
        for distance, reach, table in self._tails:
            if reach > size:
                break
            found = table.get(identity[size - reach : size - distance])
            if found is not None:
                best = self._scan(found, best, identity)
        return -1 if best == _NONE else best


def _reach(item: tuple[tuple[int, int], object]) -> int:
    return item[0][1]


def first_match_plain(rules: Sequence[Rule], identity: str) -> int:
    """QEMU's loop: the index of the first matching rule, or ``-1``."""
    for index, rule in enumerate(rules):
        if rule.is_glob:
            if g_pattern_match_simple(rule.match, identity):
                return index
        elif rule.match == identity:
            return index
    return -1


# --- the object ---------------------------------------------------------------------


class QAuthZList(QAuthZ):
    """``authz-list``: the first matching rule decides, else ``policy``."""

    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("policy", AUTHZ_LIST_POLICY),
        Member("rules", RULES),
    )

    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.policy = "deny"
        self._compiled = CompiledRules(())

    @classmethod
    def class_properties(cls) -> list[ObjectProperty]:
        def get_policy(obj: Any) -> object:
            return obj.policy

        def set_policy(obj: Any, value: object) -> None:
            obj.policy = value

        def get_rules(obj: Any) -> object:
            return [rule.to_qapi() for rule in obj.rules]

        def set_rules(obj: Any, value: object) -> None:
            obj.set_rules(value)

        return [
            ObjectProperty(
                "policy",
                AUTHZ_LIST_POLICY.qom_type,
                getter=get_policy,
                setter=set_policy,
                kind=AUTHZ_LIST_POLICY,
            ),
            ObjectProperty("rules", RULES.qom_type, getter=get_rules, setter=set_rules, kind=RULES),
        ]

    # --- the rules ----------------------------------------------------------------
    @property
    def rules(self) -> tuple[Rule, ...]:
        """The current rules, in order."""
        return self._compiled.rules

    def set_rules(self, rules: Iterable[Rule]) -> None:
        """Replace every rule; the new set is compiled before it takes effect."""
        self._compiled = CompiledRules(tuple(rules))

    def append_rule(self, match: str, policy: str, format: str = "exact") -> int:
        """Add a rule at the end (``qauthz_list_append_rule``); returns its index."""
        rules = self.rules
        self.set_rules((*rules, _new_rule(match, policy, format)))
        return len(rules)

    def insert_rule(self, match: str, policy: str, format: str, index: int) -> int:
        """Insert a rule (``qauthz_list_insert_rule``); returns where it went.

        As in QEMU, ``index`` 0 (or an empty list) puts it first; otherwise
        it goes after position ``min(index, len) - 1``, so an index past
        the end appends.
        """
        rules = list(self.rules)
        rule = _new_rule(match, policy, format)
        at = 0 if not rules or index <= 0 else min(index, len(rules))
        rules.insert(at, rule)
        self.set_rules(rules)
        return at

    def delete_rule(self, match: str) -> int:
        """Remove the first rule whose ``match`` is ``match`` (``qauthz_list_delete_rule``).

        Returns the index it had, or ``-1`` when there is none.
        """
        rules = list(self.rules)
        for index, rule in enumerate(rules):
            if rule.match == match:
                del rules[index]
                self.set_rules(rules)
                return index
        return -1

    # --- deciding ---------------------------------------------------------------------
    def check(self, identity: str) -> bool:
        compiled = self._compiled
        index = compiled.first_match(identity)
        if index < 0:
            return self.policy == "allow"
        return compiled.allows[index]

    def decide(self, identity: str) -> Decision:
        """Like :meth:`is_allowed`, and says which rule decided."""
        compiled = self._compiled
        index = compiled.first_match(identity)
        if index < 0:
            return Decision(self.policy == "allow", None, None)
        return Decision(compiled.allows[index], index, compiled.rules[index])

    def decide_plain(self, identity: str) -> Decision:
        """:meth:`decide` by QEMU's plain first-match loop (for comparison)."""
        rules = self.rules
        index = first_match_plain(rules, identity)
        if index < 0:
            return Decision(self.policy == "allow", None, None)
        return Decision(rules[index].policy == "allow", index, rules[index])


def _new_rule(match: str, policy: str, format: str) -> Rule:
    """A rule from the C-API-like helpers, which always record ``format``."""
    if policy not in _POLICIES:
        raise ValueError(f"policy must be one of {_POLICIES}, not {policy!r}")
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, not {format!r}")
    return Rule(match, policy, format)
