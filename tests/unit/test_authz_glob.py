"""authz-list's glob matching against GLib itself.

Three implementations must agree on every pattern and string:

* the real ``g_pattern_match_simple`` of the installed GLib (what QEMU 7.2
  calls), through ctypes on ``libglib-2.0.so.0``;
* :func:`g_pattern_match_simple`, the port of GLib's ``gpattern.c``;
* :func:`compile_glob`, the compiled matcher the decisions use;

and a compiled rule set must give the same decisions as QEMU's plain
first-match loop over the same rules.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qomhost.objects.authz.glob import (
    anchored_literal,
    compile_glob,
    g_pattern_match_simple,
    has_wildcards,
    literal_prefix,
)
from qomhost.objects.authz.list import CompiledRules, Rule, first_match_plain


def _load_glib() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("libglib-2.0.so.0")
    except OSError:
        return None
    lib.g_pattern_match_simple.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.g_pattern_match_simple.restype = ctypes.c_int
    return lib


GLIB = _load_glib()


def glib_match(pattern: str, string: str) -> bool:
    if GLIB is None:
        pytest.skip("libglib-2.0.so.0 is not installed")
    return bool(GLIB.g_pattern_match_simple(pattern.encode(), string.encode()))


# Characters that matter: the two wildcards, what other glob dialects treat
# specially ('[', ']', '\\', '/', '.'), multi-byte UTF-8 of every length, and
# a few plain letters so that literal runs and repeats are common.
SPECIAL = "*?[]\\/.-"
LETTERS = "abcAB"
WIDE = "é€😀"  # 2, 3 and 4 bytes in UTF-8
ALPHABET = SPECIAL + LETTERS + WIDE

patterns = st.text(alphabet=ALPHABET, max_size=12)
strings = st.text(alphabet=LETTERS + WIDE + "*?[]\\/.-", max_size=16)
# Any text GLib can take: valid UTF-8 without NUL.
any_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)

EXAMPLES = [
    ("caf?", "café", True),
    ("caf?", "cafe\u0301", False),  # two code points
    ("?", "😀", True),
    ("??", "😀", False),
    ("lab[1]*", "lab1x", False),
    ("lab[1]*", "lab[1]x", True),
    ("a\\*", "a\\x", True),
    ("a\\*", "a*", False),
    ("*", "", True),
    ("?", "", False),
    ("", "", True),
    ("", "a", False),
    ("*a*b", "xxaxxb", True),
    ("*a*b", "xxaxxbc", False),
    ("a*a*a*a*b", "a" * 40, False),
    ("*?", "x", True),
    ("?*x", "ax", True),
    ("CN=*.example.com", "CN=laptop.example.com", True),
    ("c=gb*", "C=GB,O=x", False),
    ("*O=Example*", "C=GB,O=Example Org,CN=x", True),
    ("dan*", "dan", True),
    ("team????-??", "team0042-rw", True),
    ("*@corp.example", "bob@corp.example", True),
    ("*.*", "a.b.c", True),
    ("*b*b", "abab", True),
]


@pytest.mark.parametrize(("pattern", "string", "expected"), EXAMPLES)
def test_known_cases(pattern: str, string: str, expected: bool) -> None:
    assert glib_match(pattern, string) is expected
    assert g_pattern_match_simple(pattern, string) is expected
    assert compile_glob(pattern)(string) is expected


@settings(max_examples=3000, deadline=None)
@given(patterns, strings)
@example("a*?*b", "ab")
@example("*?*?*", "é")
def test_port_and_compiled_agree_with_glib(pattern: str, string: str) -> None:
    expected = glib_match(pattern, string)
    assert g_pattern_match_simple(pattern, string) is expected
    assert compile_glob(pattern)(string) is expected


@settings(max_examples=500, deadline=None)
@given(any_text, any_text)
def test_arbitrary_text(pattern: str, string: str) -> None:
    expected = glib_match(pattern, string)
    assert g_pattern_match_simple(pattern, string) is expected
    assert compile_glob(pattern)(string) is expected


@settings(max_examples=500, deadline=None)
@given(patterns, strings)
def test_string_matches_itself_when_it_has_no_wildcards(pattern: str, string: str) -> None:
    if not has_wildcards(string):
        assert compile_glob(string)(string)
    prefix = literal_prefix(pattern)
    if compile_glob(pattern)(string):
        assert string.startswith(prefix)


@settings(max_examples=1000, deadline=None)
@example("?a*b?cd", "xa-bzcd")
@example("ab?c", "abXc")
@given(patterns, strings)
def test_every_match_has_the_anchored_literal(pattern: str, string: str) -> None:
    anchor = anchored_literal(pattern)
    if anchor is None:
        assert not pattern.replace("*", "").replace("?", "") or "*" in pattern
        return
    from_end, distance, literal = anchor
    assert literal and "*" not in literal and "?" not in literal
    if compile_glob(pattern)(string):
        at = len(string) - distance - len(literal) if from_end else distance
        assert at >= 0 and string[at : at + len(literal)] == literal


def test_anchored_literal_is_the_longest_run_at_either_end() -> None:
    assert anchored_literal("grp7*") == (False, 0, "grp7")
    assert anchored_literal("?admin3*") == (False, 1, "admin3")
    assert anchored_literal("caf?-123") == (False, 4, "-123")
    assert anchored_literal("*@corp.example") == (True, 0, "@corp.example")
    assert anchored_literal("ab*x?yzw") == (True, 0, "yzw")
    assert anchored_literal("a*xyz?") == (True, 1, "xyz")
    assert anchored_literal("svc-*-9.example") == (True, 0, "-9.example")
    assert anchored_literal("CN=*.zone3.example.com,*") == (False, 0, "CN=")
    for pattern in ("*", "?", "?*?", "*abc*", "**"):
        assert anchored_literal(pattern) is None


def test_matching_is_linear_for_many_stars() -> None:
    # A backtracking matcher takes exponential time on this; the segment
    # matcher does one scan per segment.
    pattern = "*a" * 30 + "*b"
    assert not compile_glob(pattern)("a" * 5000)
    assert compile_glob(pattern)("a" * 5000 + "b")


# --- rule sets: compiled decisions against QEMU's loop ------------------------------

rules_strategy = st.lists(
    st.builds(
        Rule,
        st.one_of(patterns, st.sampled_from(["a", "ab", "b", "é", "", "*", "a*", "*b"])),
        st.sampled_from(["allow", "deny"]),
        st.sampled_from([None, "exact", "glob", "glob"]),
    ),
    max_size=25,
)


@settings(max_examples=1500, deadline=None)
@given(rules_strategy, st.lists(strings, min_size=1, max_size=10))
def test_compiled_rules_choose_the_same_rule_as_the_loop(
    rules: list[Rule], identities: list[str]
) -> None:
    compiled = CompiledRules(rules)
    for identity in identities:
        assert compiled.first_match(identity) == first_match_plain(rules, identity)


def test_first_match_wins_across_exact_and_glob() -> None:
    rules = [
        Rule("d*", "deny", "glob"),
        Rule("dan", "allow"),
        Rule("dan", "deny", "exact"),
        Rule("*", "allow", "glob"),
        Rule("x?", "deny", "glob"),
    ]
    compiled = CompiledRules(rules)
    assert compiled.first_match("dan") == 0
    assert compiled.first_match("xy") == 3
    assert compiled.first_match("") == 3
    later = CompiledRules([Rule("dan", "allow"), Rule("d*", "deny", "glob")])
    assert later.first_match("dan") == 0
    assert later.first_match("dave") == 1
    assert CompiledRules([]).first_match("x") == -1


def test_glob_without_wildcards_is_exact_and_exact_rule_is_not_a_glob() -> None:
    compiled = CompiledRules([Rule("a*", "allow"), Rule("a", "allow", "glob")])
    assert compiled.first_match("a*") == 0
    assert compiled.first_match("ab") == -1
    assert compiled.first_match("a") == 1


def test_real_glib_is_the_one_qemu_uses() -> None:
    found = ctypes.util.find_library("glib-2.0")
    if found is None or GLIB is None:
        pytest.skip("GLib is not installed")
    GLIB.glib_check_version.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_uint]
    GLIB.glib_check_version.restype = ctypes.c_char_p
    # Debian 12 (QEMU 7.2's distribution) ships GLib 2.74.
    assert GLIB.glib_check_version(2, 74, 0) is None
