"""GHashOrder against real GLib hash tables, and the QOM orders QEMU 7.2 shows."""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qomhost.qom.ghash import GHashOrder, g_str_hash

# -- the GLib oracle -----------------------------------------------------------


class _GLib:
    """Entry points of the system libglib used by the oracle tables."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        vp = ctypes.c_void_p
        lib.g_hash_table_new.restype = vp
        lib.g_hash_table_new.argtypes = [vp, vp]
        lib.g_hash_table_insert.restype = ctypes.c_int
        lib.g_hash_table_insert.argtypes = [vp, vp, vp]
        lib.g_hash_table_remove.restype = ctypes.c_int
        lib.g_hash_table_remove.argtypes = [vp, vp]
        lib.g_hash_table_contains.restype = ctypes.c_int
        lib.g_hash_table_contains.argtypes = [vp, vp]
        lib.g_hash_table_size.restype = ctypes.c_uint
        lib.g_hash_table_size.argtypes = [vp]
        lib.g_hash_table_iter_init.restype = None
        lib.g_hash_table_iter_init.argtypes = [vp, vp]
        lib.g_hash_table_iter_next.restype = ctypes.c_int
        lib.g_hash_table_iter_next.argtypes = [vp, vp, vp]
        lib.g_hash_table_destroy.restype = None
        lib.g_hash_table_destroy.argtypes = [vp]
        lib.g_str_hash.restype = ctypes.c_uint
        lib.g_str_hash.argtypes = [ctypes.c_char_p]
        # The table needs the functions' addresses, not Python callbacks.
        self.str_hash = ctypes.cast(lib.g_str_hash, vp)
        self.str_equal = ctypes.cast(lib.g_str_equal, vp)


class _GLibTable:
    """A ``g_hash_table_new(g_str_hash, g_str_equal)`` table with string keys."""

    def __init__(self, glib: _GLib) -> None:
        self._glib = glib
        self._lib = glib.lib
        self._table = self._lib.g_hash_table_new(glib.str_hash, glib.str_equal)
        # GLib stores the key pointers it is given; every buffer handed over
        # stays alive as long as the table does.
        self._buffers: list[ctypes.Array[ctypes.c_char]] = []

    def close(self) -> None:
        if self._table is not None:
            self._lib.g_hash_table_destroy(self._table)
            self._table = None
            self._buffers.clear()

    def _buffer(self, key: str) -> ctypes.Array[ctypes.c_char]:
        buf = ctypes.create_string_buffer(key.encode("utf-8"))
        self._buffers.append(buf)
        return buf

    def insert(self, key: str) -> bool:
        buf = self._buffer(key)
        return bool(self._lib.g_hash_table_insert(self._table, buf, buf))

    def remove(self, key: str) -> bool:
        return bool(self._lib.g_hash_table_remove(self._table, self._buffer(key)))

    def contains(self, key: str) -> bool:
        return bool(self._lib.g_hash_table_contains(self._table, self._buffer(key)))

    def __len__(self) -> int:
        return int(self._lib.g_hash_table_size(self._table))

    def keys(self) -> list[str]:
        # GHashTableIter is six pointer-or-int fields; 64 bytes is ample.
        it = ctypes.create_string_buffer(64)
        self._lib.g_hash_table_iter_init(it, self._table)
        key = ctypes.c_void_p()
        out = []
        while self._lib.g_hash_table_iter_next(it, ctypes.byref(key), None):
            assert key.value is not None
            out.append(ctypes.string_at(key.value).decode("utf-8"))
        return out


def _load_glib() -> _GLib | None:
    try:
        return _GLib(ctypes.CDLL("libglib-2.0.so.0"))
    except OSError:
        return None


_GLIB = _load_glib()


@pytest.fixture(scope="module")
def glib() -> _GLib:
    if _GLIB is None:
        if os.environ.get("CI") == "true":
            pytest.fail("libglib-2.0.so.0 is required in CI")
        pytest.skip("libglib-2.0.so.0 not available")
    return _GLIB


class _Pair:
    """A model and a real table driven in lockstep."""

    def __init__(self, glib: _GLib) -> None:
        self.model = GHashOrder()
        self.real = _GLibTable(glib)

    def insert(self, key: str) -> None:
        assert self.model.insert(key) == self.real.insert(key)

    def remove(self, key: str) -> None:
        assert self.model.remove(key) == self.real.remove(key)

    def check(self) -> None:
        assert self.model.keys() == self.real.keys()
        assert len(self.model) == len(self.real)


# -- strategies ----------------------------------------------------------------

# Object ids and property names: short ASCII identifiers.
_ASCII_KEY = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
    min_size=1,
    max_size=12,
)
# Anything but NUL (and lone surrogates, which have no UTF-8 form), so that
# bytes >= 0x80 exercise the signed-char arithmetic of g_str_hash.
_C_CHAR = st.characters(min_codepoint=1, codec="utf-8")
_ANY_KEY = st.text(alphabet=_C_CHAR, max_size=8)
_KEY = st.one_of(_ASCII_KEY, _ASCII_KEY, _ASCII_KEY, _ANY_KEY)

# (operation, key for inserts, selector of a present key for the others).
# The length is drawn first: left alone, hypothesis keeps lists short, and
# the interesting histories run through several resizes.
_OP = st.tuples(
    st.sampled_from(["insert", "insert", "insert", "reinsert", "remove", "remove", "miss"]),
    _KEY,
    st.integers(min_value=0, max_value=2**31),
)
_OPS = st.integers(min_value=0, max_value=400).flatmap(
    lambda n: st.lists(_OP, min_size=n, max_size=n)
)


def _run(pair: _Pair, ops: Iterable[tuple[str, str, int]]) -> None:
    present: list[str] = []
    for n, (op, key, pick) in enumerate(ops):
        if op in ("reinsert", "remove") and present:
            key = present[pick % len(present)]
        if op in ("insert", "reinsert"):
            pair.insert(key)
            if key not in present:
                present.append(key)
        elif op == "remove" or (op == "miss" and key not in present):
            pair.remove(key)
            if key in present:
                present.remove(key)
        if n % 25 == 0:
            pair.check()
    pair.check()


# -- against the real libglib ----------------------------------------------------


@given(st.one_of(_KEY, st.text(alphabet=_C_CHAR)))
def test_str_hash_matches_glib(glib: _GLib, key: str) -> None:
    assert g_str_hash(key) == glib.lib.g_str_hash(key.encode("utf-8"))


@settings(deadline=None)
@given(_OPS)
def test_random_operations_match_glib(glib: _GLib, ops: list[tuple[str, str, int]]) -> None:
    pair = _Pair(glib)
    try:
        _run(pair, ops)
    finally:
        pair.real.close()


@settings(deadline=None, max_examples=60)
@given(st.data())
def test_grow_then_shrink_matches_glib(glib: _GLib, data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=0, max_value=300), label="count")
    keys = data.draw(st.lists(_KEY, min_size=count, max_size=count, unique=True), label="keys")
    pair = _Pair(glib)
    try:
        for key in keys:
            pair.insert(key)
        pair.check()
        order = data.draw(st.permutations(keys), label="removal order")
        keep = data.draw(st.integers(min_value=0, max_value=len(keys)), label="keep")
        for n, key in enumerate(order[: len(order) - keep]):
            pair.remove(key)
            if n % 7 == 0:
                # Interleave re-inserts of live keys, which must not move.
                pair.insert(order[-1])
            if n % 20 == 0:
                pair.check()
        pair.check()
        # Grow again over the tombstone-cleaned, shrunken table.
        for key in order[: len(order) - keep : 3]:
            pair.insert(key)
        pair.check()
    finally:
        pair.real.close()


@pytest.mark.parametrize("seed", range(5))
def test_long_history_matches_glib(glib: _GLib, seed: int) -> None:
    """Thousands of operations: growth to 8192 slots, churn, and shrinking back."""
    rng = random.Random(seed)
    pair = _Pair(glib)
    present: list[str] = []
    members: set[str] = set()
    try:
        for phase_length, remove_rate in ((5000, 0.1), (4000, 0.5), (5000, 0.95)):
            for _ in range(phase_length):
                if present and rng.random() < remove_rate:
                    index = rng.randrange(len(present))
                    present[index], present[-1] = present[-1], present[index]
                    key = present.pop()
                    members.discard(key)
                    pair.remove(key)
                else:
                    key = f"obj{rng.randrange(10**6)}"
                    pair.insert(key)
                    if key not in members:
                        members.add(key)
                        present.append(key)
            pair.check()
        assert all(key in pair.model and pair.real.contains(key) for key in present)
        assert pair.model.size < 64
    finally:
        pair.real.close()


# -- plain behaviour of the model --------------------------------------------------


def test_model_basics() -> None:
    table = GHashOrder()
    assert table.keys() == [] and len(table) == 0 and table.size == 8
    assert table.insert("a") is True
    assert table.insert("a") is False
    assert "a" in table and "b" not in table and 3 not in table
    assert table.remove("b") is False
    assert table.remove("a") is True
    assert table.keys() == [] and len(table) == 0
    # A NUL in a key stands for QEMU's C0 80 (JSON "\u0000"); raw bytes
    # from the command line are kept as surrogate escapes.
    assert table.insert("a\0b") is True
    assert g_str_hash("a\0b") == g_str_hash(
        "a\xc0\x80b".encode("latin-1").decode("utf-8", "surrogateescape")
    )
    assert table.insert("\udcff=") is True


def test_model_resizes() -> None:
    table = GHashOrder()
    keys = [f"k{i}" for i in range(100)]
    for key in keys:
        table.insert(key)
    assert table.size == 128
    assert sorted(table.keys()) == sorted(keys)
    assert list(table) == table.keys()
    for key in keys[:95]:
        table.remove(key)
    # 32 slots for 7 keys is over a quarter empty: int(7 * 1.333) = 9 -> 16 slots,
    # and 16 slots stay for 5 keys.
    assert table.size == 16
    assert sorted(table.keys()) == sorted(keys[95:])


def test_str_hash_known_values() -> None:
    assert g_str_hash("") == 5381
    assert g_str_hash("a") == 5381 * 33 + 97
    # U+00E9 is C3 A9: both bytes count as negative chars.
    assert g_str_hash("é") == ((5381 * 33 - 61) * 33 - 87) & 0xFFFFFFFF


# -- the orders QEMU 7.2 shows -------------------------------------------------------


def _table(keys: Sequence[str]) -> GHashOrder:
    table = GHashOrder()
    for key in keys:
        table.insert(key)
    return table


def _qom_list(instance: Sequence[str], classes: Sequence[Sequence[str]]) -> list[str]:
    """qom-list: iterate the instance table, then each class table from the
    object's own class up to ``object``, prepending every name to a list."""
    walked: list[str] = []
    for registered in (instance, *classes):
        walked.extend(_table(registered).keys())
    return walked[::-1]


# Registration order in QEMU 7.2's class_init functions.
_OBJECT = ["type"]  # qom/object.c object_class_init
_SECRET_COMMON = ["loaded", "format", "keyid", "iv"]  # crypto/secret_common.c
_SECRET = ["data", "file"]  # crypto/secret.c
_EVENT_LOOP_BASE = ["aio-max-batch", "thread-pool-min", "thread-pool-max"]  # event-loop-base.c
_IOTHREAD = ["poll-max-ns", "poll-grow", "poll-shrink"]  # iothread.c


def test_qom_list_secret() -> None:
    assert _qom_list([], [_SECRET, _SECRET_COMMON, _OBJECT]) == [
        "type",
        "iv",
        "keyid",
        "loaded",
        "format",
        "file",
        "data",
    ]


def test_qom_list_iothread() -> None:
    assert _qom_list([], [_IOTHREAD, _EVENT_LOOP_BASE, _OBJECT]) == [
        "type",
        "thread-pool-min",
        "aio-max-batch",
        "thread-pool-max",
        "poll-max-ns",
        "poll-grow",
        "poll-shrink",
    ]


def test_qom_list_objects_container() -> None:
    # -object secret,id=s -object iothread,id=io: qom-list /objects gives
    # type, io, s (children are instance properties of the container).
    assert _qom_list(["s", "io"], [_OBJECT]) == ["type", "io", "s"]


def test_query_iothreads_order() -> None:
    # query-iothreads appends in iteration order of /objects' table.
    assert _table(["iothread1", "io2", "io3"]).keys() == ["io3", "iothread1", "io2"]


@pytest.mark.parametrize(
    "registered", [_OBJECT, _SECRET_COMMON, _SECRET, _EVENT_LOOP_BASE, _IOTHREAD]
)
def test_class_tables_match_glib(glib: _GLib, registered: list[str]) -> None:
    pair = _Pair(glib)
    try:
        for key in registered:
            pair.insert(key)
        pair.check()
    finally:
        pair.real.close()
