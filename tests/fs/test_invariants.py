"""The inode table's invariant check (run after every core test by conftest) catches breakage.

Async only because the directory's autouse fixture is a trio fixture.
"""

from __future__ import annotations

import stat

import pytest

from objfs.fs.inodes import ROOT_INO, InodeTable, Kind, Node
from objfs.fs.posix_attrs import Attrs


def attrs(kind: Kind) -> Attrs:
    return Attrs(mode=kind.value | 0o755, uid=0, gid=0, mtime_ns=0, ctime_ns=0, atime_ns=0)


def small_table() -> tuple[InodeTable, Node, Node, Node]:
    """root (bucket "b") / d / f"""
    table = InodeTable()
    root = table.add_root(Node(ROOT_INO, Kind.DIR, "", ROOT_INO, "b", "", attrs(Kind.DIR)))
    d = table.new(Kind.DIR, root, "d", attrs(Kind.DIR))
    f = table.new(Kind.FILE, d, "f", attrs(Kind.FILE))
    return table, root, d, f


async def test_a_sound_table_passes():
    table, _, d, f = small_table()
    table.check_invariants()
    table.ref(f)
    table.detach(d)  # f stays, detached, while the kernel holds it
    table.check_invariants()
    table.forget(f.ino, 1)
    table.check_invariants()
    assert f.ino not in table


async def test_an_entry_whose_child_disagrees_fails():
    table, _, _, f = small_table()
    f.name = "g"
    with pytest.raises(AssertionError, match="entry 'f' but says it is 'g'"):
        table.check_invariants()


async def test_an_unreachable_attached_node_fails():
    table, root, _, _ = small_table()
    assert root.children is not None
    del root.children["d"]
    with pytest.raises(AssertionError, match="attached but not reachable"):
        table.check_invariants()


async def test_a_negative_lookup_count_fails():
    table, _, _, f = small_table()
    f.lookups = -1
    with pytest.raises(AssertionError, match="negative count"):
        table.check_invariants()


async def test_a_dangling_entry_and_a_wrong_path_fail():
    table, _, d, f = small_table()
    assert d.children is not None and d.child_ids is not None
    d.children["ghost"] = 999
    d.child_ids["ghost"] = d.next_child_id
    d.next_child_id += 1
    f.path = "elsewhere/f"
    problems = table.problems()
    assert any("not in the table" in p for p in problems)
    assert any("bucket and path do not follow" in p for p in problems)


async def test_a_detached_unreferenced_node_left_in_the_table_fails():
    table, _, _, f = small_table()
    table.detach(f)
    assert f.ino not in table
    f.attached = False
    table._nodes[f.ino] = f  # what a missed maybe_drop would leave behind
    with pytest.raises(AssertionError, match="detached and unreferenced"):
        table.check_invariants()
    assert stat.S_ISREG(f.attrs.mode)
