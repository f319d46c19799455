"""Iteration order of GLib 2.74 string-keyed hash tables.

QEMU keeps every QOM property table (per object and per class) in a
``GHashTable`` created with ``g_hash_table_new(g_str_hash, g_str_equal)``
(or its ``_full`` variant). ``qom-list``, ``query-iothreads`` and child
iteration walk those tables slot by slot, so their output order is neither
insertion nor alphabetical order: it is a function of the keys' hashes and
of the table's whole insert/remove history, including every resize.

:class:`GHashOrder` replays that history on a model of GLib 2.74's slot
array (hashes and keys; values are irrelevant to the order and stay with the
caller) and reports the keys in the order ``GHashTableIter`` yields them.

The rules modelled, all from GLib 2.74's ``ghash.c``:

* the table starts with 8 slots; a table of ``2**s`` slots pairs with
  ``_PRIME_MOD[s]``, the largest prime below ``2**s``;
* a key's hash is ``g_str_hash`` (djb2 over *signed* chars), with hash
  values 0 and 1 (reserved for "empty" and "tombstone") replaced by 2;
* the home slot is ``(hash * 11) % mod`` in 32-bit unsigned arithmetic,
  and probing is quadratic: ``step += 1; slot = (slot + step) & mask``;
* a new key goes into the first tombstone met on its probe path, else into
  the empty slot that ended the path; re-inserting a present key keeps its
  slot; removing leaves a tombstone;
* after inserting into an *empty* slot, and after every successful remove,
  the table resizes when it is over a quarter empty of live keys (and bigger
  than 8 slots) or when live keys plus tombstones fill 16/17 of it;
* a resize picks the size from ``int(nnodes * 1.333)`` and rehashes *in
  place*, walking old slots from 0 upwards and letting each key evict the
  not-yet-placed key in its new slot; that eviction chain is what fixes the
  order after a resize, so it is reproduced step for step.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["GHashOrder", "g_str_hash"]

# Slot markers GLib stores in the hash array; real hashes are always >= 2.
_UNUSED = 0
_TOMBSTONE = 1

_MIN_SHIFT = 3

# Largest prime below 2**shift, indexed by shift (GLib's table).
_PRIME_MOD = (
    1,
    2,
    3,
    7,
    13,
    31,
    61,
    127,
    251,
    509,
    1021,
    2039,
    4093,
    8191,
    16381,
    32749,
    65521,
    131071,
    262139,
    524287,
    1048573,
    2097143,
    4194301,
    8388593,
    16777213,
    33554393,
    67108859,
    134217689,
    268435399,
    536870909,
    1073741789,
    2147483647,
)

_U32 = 0xFFFFFFFF


def c_key_bytes(key: str) -> bytes:
    """The bytes of the C string QEMU holds for ``key``.

    JSON's ``\\u0000`` is stored as ``C0 80`` (QEMU's modified UTF-8), and
    bytes that were not UTF-8 on the command line (kept by Python as
    surrogate escapes) are the raw bytes again.
    """
    return key.encode("utf-8", "surrogateescape").replace(b"\x00", b"\xc0\x80")


def g_str_hash(key: str) -> int:
    """GLib's ``g_str_hash`` of ``key``'s C bytes, as an unsigned 32-bit int.

    The bytes are read as *signed* chars, so every byte of a non-ASCII
    character contributes a negative value.
    """
    h = 5381
    for byte in c_key_bytes(key):
        h = (h * 33 + (byte - 256 if byte >= 128 else byte)) & _U32
    return h


class GHashOrder:
    """The slot layout of a ``g_hash_table_new(g_str_hash, g_str_equal)`` table.

    Only keys are tracked. Feed it the same sequence of
    :meth:`insert` / :meth:`remove` calls that QEMU makes on its table and
    :meth:`keys` returns the keys in GLib's iteration order. Every operation
    is O(1) amortised, as in GLib.

    Keys are Python strings standing for C strings (see :func:`c_key_bytes`).
    """

    __slots__ = ("_hash_of", "_hashes", "_keys", "_mask", "_mod", "_noccupied", "_size")

    def __init__(self) -> None:
        self._size = 1 << _MIN_SHIFT
        self._mod = _PRIME_MOD[_MIN_SHIFT]
        self._mask = self._size - 1
        self._hashes: list[int] = [_UNUSED] * self._size
        self._keys: list[str | None] = [None] * self._size
        # Live keys and their (already clamped) hashes. Its length is GLib's
        # nnodes; it also answers membership without probing.
        self._hash_of: dict[str, int] = {}
        # Live keys plus tombstones, which GLib counts for its grow check.
        self._noccupied = 0

    # -- public interface ---------------------------------------------------

    def insert(self, key: str) -> bool:
        """Model ``g_hash_table_insert(table, key, value)``.

        A key already present keeps its slot (only its value would change in
        GLib), so nothing moves. Returns True if the key was new, as GLib does.
        """
        if key in self._hash_of:
            return False
        hash_value = self._hash(key)
        slot = self._home(hash_value)
        step = 0
        first_tombstone = -1
        hashes = self._hashes
        mask = self._mask
        # The key is known to be absent, so the probe can only end at an
        # empty slot; GLib reuses the first tombstone seen on the way.
        while hashes[slot] != _UNUSED:
            if hashes[slot] == _TOMBSTONE and first_tombstone < 0:
                first_tombstone = slot
            step += 1
            slot = (slot + step) & mask
        if first_tombstone >= 0:
            slot = first_tombstone
        reused_empty = hashes[slot] == _UNUSED
        hashes[slot] = hash_value
        self._keys[slot] = key
        self._hash_of[key] = hash_value
        # GLib only considers resizing when an empty slot was consumed;
        # filling a tombstone leaves the occupancy unchanged.
        if reused_empty:
            self._noccupied += 1
            self._maybe_resize()
        return True

    def remove(self, key: str) -> bool:
        """Model ``g_hash_table_remove(table, key)``.

        The key's slot becomes a tombstone, then the table may shrink or be
        cleaned. Removing an absent key changes nothing (GLib does not even
        consider a resize then). Returns True if the key was present.
        """
        hash_value = self._hash_of.pop(key, None)
        if hash_value is None:
            return False
        slot = self._home(hash_value)
        step = 0
        hashes = self._hashes
        keys = self._keys
        while not (hashes[slot] == hash_value and keys[slot] == key):
            step += 1
            slot = (slot + step) & self._mask
        hashes[slot] = _TOMBSTONE
        keys[slot] = None
        self._maybe_resize()
        return True

    def keys(self) -> list[str]:
        """The live keys in ``GHashTableIter`` order (slot 0 upwards)."""
        return [k for k in self._keys if k is not None]

    def __iter__(self) -> Iterator[str]:
        """Iterate over the keys in ``GHashTableIter`` order."""
        return iter(self.keys())

    def __len__(self) -> int:
        """The number of live keys (``g_hash_table_size``)."""
        return len(self._hash_of)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is present (``g_hash_table_contains``)."""
        return key in self._hash_of

    def __repr__(self) -> str:
        return f"GHashOrder({self.keys()!r})"

    @property
    def size(self) -> int:
        """The current number of slots (a power of two, at least 8)."""
        return self._size

    # -- GLib internals ----------------------------------------------------

    @staticmethod
    def _hash(key: str) -> int:
        hash_value = g_str_hash(key)
        # 0 and 1 mark empty slots and tombstones, so GLib bumps them to 2.
        return hash_value if hash_value >= 2 else 2

    def _home(self, hash_value: int) -> int:
        return ((hash_value * 11) & _U32) % self._mod

    def _maybe_resize(self) -> None:
        nnodes = len(self._hash_of)
        noccupied = self._noccupied
        size = self._size
        if (size > nnodes * 4 and size > 1 << _MIN_SHIFT) or (size <= noccupied + noccupied // 16):
            self._resize()

    def _resize(self) -> None:
        nnodes = len(self._hash_of)
        old_size = self._size
        # GLib computes this in double precision and truncates to int.
        shift = max(int(nnodes * 1.333).bit_length(), _MIN_SHIFT)
        self._size = size = 1 << shift
        self._mod = mod = _PRIME_MOD[shift]
        self._mask = mask = size - 1

        hashes = self._hashes
        keys = self._keys
        if size > old_size:
            hashes.extend([_UNUSED] * (size - old_size))
            keys.extend([None] * (size - old_size))
        # placed[i] is set once slot i holds a key in its final position for
        # this resize; such a key is never evicted or visited again.
        placed = bytearray(max(size, old_size))

        for i in range(old_size):
            hash_value = hashes[i]
            if hash_value < 2:
                # Tombstones vanish in a resize.
                hashes[i] = _UNUSED
                continue
            if placed[i]:
                continue
            # Lift the key out and carry it to its new slot; if that slot
            # holds a key not yet placed, that key is lifted in turn, until
            # a free slot ends the chain.
            hashes[i] = _UNUSED
            key = keys[i]
            keys[i] = None
            while True:
                slot = ((hash_value * 11) & _U32) % mod
                step = 0
                while placed[slot]:
                    step += 1
                    slot = (slot + step) & mask
                placed[slot] = 1
                displaced_hash = hashes[slot]
                hashes[slot] = hash_value
                if displaced_hash < 2:
                    keys[slot] = key
                    break
                hash_value = displaced_hash
                key, keys[slot] = keys[slot], key

        if size < old_size:
            del hashes[size:]
            del keys[size:]
        self._noccupied = nnodes
