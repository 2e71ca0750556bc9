"""Static memory plan: every intermediate tensor gets a fixed offset in one buffer.

Tensors joined by RESHAPE-like ops share storage (they are the same bytes), forming
one *allocation*. The allocation holding the model output lives in the caller's
buffer. The model input lives in the arena, as in TFLite Micro's: it is written
before the first step and live until the last step that reads it, after which later
tensors reuse its bytes. Every allocation is live from the step that first touches
it (step 0 for the input) to the step that last reads it (inclusive), and they are
packed greedily, largest first, each at the lowest aligned offset that does not
overlap an allocation whose lifetime intersects its own.

One exception: a step that can run in place (``Step.in_place``: a strided line
convolution computing its output positions in ascending order) whose input dies at
that step may have its output overlap its input, provided the input starts at least
``Step.in_place`` bytes above the output's start. That distance is the kernel's proof
that no output byte is written before the input bytes under it are read (see
``kernels._line_in_place_gap``); the stem convolution of a 1-D CNN is the case that
matters: its output then grows over its input instead of beside it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from edge_ecg.aot.graph import Graph
from edge_ecg.aot.kernels import Step


@dataclass(frozen=True)
class Allocation:
    """One block of the arena (or a caller buffer) and the tensors stored in it."""

    tensors: tuple[int, ...]  # tensor indices sharing these bytes
    names: tuple[str, ...]
    size: int
    first: int  # first step (op position) touching it
    last: int  # last step reading it
    offset: int  # byte offset in the arena; -1 when bound to the caller's output buffer
    binding: str = "arena"  # "arena", "input" (in the arena too) or "output"

    def overlaps_in_time(self, other: Allocation) -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps_in_memory(self, other: Allocation) -> bool:
        return self.offset < other.offset + other.size and other.offset < self.offset + self.size


@dataclass(frozen=True)
class MemoryPlan:
    allocations: tuple[Allocation, ...]  # arena allocations first, by offset
    arena_bytes: int  # size of the activation buffer
    naive_bytes: int  # sum of the arena allocations' sizes (no reuse), the input's included
    alignment: int
    copies: frozenset[int]  # steps whose alias had to become a copy (input -> output)
    in_place: frozenset[int] = frozenset()  # steps whose output overlaps their input (Step.in_place)

    @property
    def arena(self) -> tuple[Allocation, ...]:
        """The allocations in the activation buffer, the model input's included."""
        return tuple(a for a in self.allocations if a.binding != "output")

    @property
    def input(self) -> Allocation:
        return next(a for a in self.allocations if a.binding == "input")

    def location(self, tensor: int) -> Allocation:
        for a in self.allocations:
            if tensor in a.tensors:
                return a
        raise KeyError(tensor)


def _align(x: int, alignment: int) -> int:
    return (x + alignment - 1) // alignment * alignment


def pack(
    requests: Sequence[tuple[Hashable, int, int, int]],
    alignment: int = 16,
    in_place: Mapping[tuple[Hashable, Hashable], int] | None = None,
) -> tuple[dict[Hashable, int], int]:
    """Offsets for ``(key, size, first, last)`` requests: largest first, first fit.

    Two requests whose [first, last] intervals intersect never overlap in memory, except
    a pair ``(a, b)`` of ``in_place`` (``{(input key, output key): gap}``), which may overlap
    when ``offset[a] - offset[b] >= gap``.
    Returns ``({key: offset}, total_bytes)``; deterministic for a given input.
    """
    if alignment < 1:
        raise ValueError("alignment must be positive")
    in_place = dict(in_place or {})
    order = sorted(requests, key=lambda r: (-r[1], r[2], r[3], str(r[0])))
    placed: list[tuple[Hashable, int, int, int, int]] = []  # key, offset, size, first, last
    offsets: dict[Hashable, int] = {}
    total = 0
    for key, size, first, last in order:
        # Offsets x this request may not take: [lo, hi) per live placed block.
        forbidden = []
        for other, o, s, f, l in placed:
            if not (f <= last and first <= l):
                continue
            lo, hi = o - size + 1, o + s  # x in [lo, hi): the two overlap
            if (key, other) in in_place:  # this is the input: allowed from o + gap up
                hi = min(hi, o + in_place[key, other])
            elif (other, key) in in_place:  # this is the output: allowed up to o - gap
                lo = max(lo, o - in_place[other, key] + 1)
            if lo < hi:
                forbidden.append((lo, hi))
        offset = 0
        for lo, hi in sorted(forbidden):
            if offset < lo:
                break
            offset = max(offset, _align(hi, alignment))
        placed.append((key, offset, size, first, last))
        offsets[key] = offset
        total = max(total, offset + size)
    return offsets, total


def plan(graph: Graph, steps: Sequence[Step], alignment: int = 16) -> MemoryPlan:
    """The memory plan for lowered ``steps`` of ``graph`` (one input, one output)."""
    (graph_in,) = graph.inputs
    (graph_out,) = graph.outputs
    parent = {t.index: t.index for t in graph.tensors}

    def find(t: int) -> int:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def group_has(root: int, tensor: int) -> bool:
        return find(tensor) == root

    copies = set()
    for s, step in enumerate(steps):
        if step.kind != "alias":
            continue
        a, b = find(step.inputs[0]), find(step.output)
        io_a = {x for x in (graph_in, graph_out) if group_has(a, x)}
        io_b = {x for x in (graph_in, graph_out) if group_has(b, x)}
        if io_a and io_b:
            copies.add(s)  # joining would make the input and output one buffer: copy
        else:
            parent[b] = a

    first: dict[int, int] = {find(graph_in): 0}  # written before the first step
    last: dict[int, int] = {find(graph_in): 0}
    for s, step in enumerate(steps):
        for t in (*step.inputs, step.output):
            r = find(t)
            first[r] = min(first.get(r, s), s)
            last[r] = max(last.get(r, s), s)

    members: dict[int, list[int]] = {}
    for t in sorted(_touched(steps) | {graph_in}):
        members.setdefault(find(t), []).append(t)

    allocations = []
    requests = []
    for root, tensors in members.items():
        size = graph.tensors[root].size
        binding = "arena"
        if group_has(root, graph_in):
            binding = "input"
        elif group_has(root, graph_out):
            binding = "output"
        if binding != "output":
            requests.append((root, size, first[root], last[root]))
        allocations.append((root, tuple(sorted(tensors)), size, binding))

    # In-place candidates: the step's input dies there and both live in the arena.
    arena_roots = {root for root, _, _, binding in allocations if binding != "output"}
    candidates: dict[int, tuple[int, int]] = {}  # step -> (input root, output root)
    for s, step in enumerate(steps):
        if step.in_place is None or len(step.inputs) != 1:
            continue
        a, b = find(step.inputs[0]), find(step.output)
        if a != b and a in arena_roots and b in arena_roots and last[a] == s and first[b] == s:
            candidates[s] = (a, b)
    offsets, total = pack(requests, alignment, {ab: steps[s].in_place for s, ab in candidates.items()})
    size = {root: graph.tensors[root].size for root in members}
    in_place = frozenset(  # the candidates the packer did put over their input
        s for s, (a, b) in candidates.items()
        if offsets[a] < offsets[b] + size[b] and offsets[b] < offsets[a] + size[a]
    )
    result = [
        Allocation(
            tensors,
            tuple(graph.tensors[t].name for t in tensors),
            size,
            first[root],
            last[root],
            offsets.get(root, -1),
            binding,
        )
        for root, tensors, size, binding in allocations
    ]
    result.sort(key=lambda a: (a.binding == "output", a.offset, a.tensors))
    return MemoryPlan(
        tuple(result),
        total,
        sum(a.size for a in result if a.binding != "output"),
        alignment,
        frozenset(copies),
        in_place,
    )


def _touched(steps: Sequence[Step]) -> set[int]:
    out = set()
    for step in steps:
        out.update(step.inputs)
        out.add(step.output)
    return out
