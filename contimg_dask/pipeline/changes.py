"""Which blocks a pass of :meth:`Pipeline.advance <contimg_dask.pipeline.Pipeline.advance>`
must look at: every sealed block at the first pass, then only those whose stages changed.

A block's next stage depends only on its stages' statuses (and, for a target waiting for a
solve, on calibrator blocks and the time: those blocks are looked at every pass by the
caller). The statuses change through the state store, which records each change as an
event, whichever process made it: ``block_sealed`` (a new block), ``stage_done``,
``stage_retry`` and ``stage_failed``. Reading the events since the last pass (one query)
names the blocks to look at; a process also marks the blocks it changes itself without
an event (a block submitted again, a stage queued again after a configuration change).
"""

from __future__ import annotations

from collections.abc import Callable

from contimg_dask.state.records import Event

#: The events after which a block's next stage may differ.
CHANGE_EVENTS = frozenset({"block_sealed", "stage_done", "stage_retry", "stage_failed"})
#: Events read per query.
PAGE = 1000

#: ``events(after, count)``: the state store's events after id ``after`` (None: from the
#: first), at most ``count``, oldest first.
ReadEvents = Callable[[str | None, int], list[Event]]


class ChangedBlocks:
    """The blocks changed since the last :meth:`take` (see the module docstring)."""

    def __init__(self, read_events: ReadEvents) -> None:
        self._read = read_events
        self._cursor: str | None = None
        self._marked: set[str] = set()
        self._first = True

    def mark(self, block_id: str) -> None:
        """Look at ``block_id`` at the next pass (changed by this process)."""
        self._marked.add(block_id)

    def take(self) -> set[str] | None:
        """The blocks changed since the last call; None at the first call (look at every
        block: the events before it are skipped). A state store error leaves everything as
        it was, for the next call."""
        marked, self._marked = self._marked, set()  # marks made meanwhile stay for later
        cursor, changed = self._cursor, set(marked)
        try:
            while True:
                events = self._read(cursor, PAGE)
                changed.update(e.data["block_id"] for e in events
                               if e.kind in CHANGE_EVENTS and "block_id" in e.data)
                if events:
                    cursor = events[-1].id
                if len(events) < PAGE:
                    break
        except BaseException:
            self._marked |= marked
            raise
        first, self._first = self._first, False
        self._cursor = cursor
        return None if first else changed

    def give_back(self, taken: set[str] | None) -> None:
        """Hand back what :meth:`take` returned, for a pass that failed before looking at
        every block it named (the state store went away mid-pass): the next call returns
        them again (``None``: the next call looks at every block again)."""
        if taken is None:
            self._first = True
        else:
            self._marked |= taken
