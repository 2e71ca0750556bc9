"""Lead sets: the ``--leads`` presets, lead names, and picking a model's leads out of a dataset.

A run stores its lead set in ``config.json`` (``train.leads``, canonical names in the
order of the model's input channels); every later stage reads it from there. Names are
matched case-insensitively (``aVR`` = ``AVR``); canonical spelling is PTB-XL's
(:data:`edge_ecg.data.ptbxl.LEADS`, upper case), the firmware's header shows the usual
spelling (``aVR``).

Presets::

    12   I, II, III, aVR, aVL, aVF, V1-V6
    6    I, II, III, aVR, aVL, aVF (the limb leads)
    3    I, II, V2
    2    I, II
    1    I             (also: I, II, or any single lead name)
    any comma list of lead names, e.g. "II,V5"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edge_ecg.data.ptbxl import LEADS, DataError

__all__ = ["LEAD_PRESETS", "LeadError", "display_name", "lead_indices", "parse_leads", "select_leads"]

LEAD_PRESETS: dict[str, tuple[str, ...]] = {
    "12": LEADS,
    "6": LEADS[:6],
    "3": ("I", "II", "V2"),
    "2": ("I", "II"),
    "1": ("I",),
}


class LeadError(DataError):
    """An unknown lead name or preset, or a dataset without a lead the model needs."""


def parse_leads(spec: str | Sequence[str] | None, argument: str = "--leads") -> tuple[str, ...]:
    """Canonical lead names of a preset (``"3"``), a comma list (``"I,II,V2"``) or a sequence of names.

    ``None`` means all twelve. LeadError naming ``argument`` for an unknown name, a repeat or an empty list.
    """
    if spec is None:
        return LEADS
    if isinstance(spec, str):
        text = spec.strip()
        if text in LEAD_PRESETS:
            return LEAD_PRESETS[text]
        names = [part.strip() for part in text.split(",")]
    else:
        names = [str(part).strip() for part in spec]
    if not names or any(not n for n in names):
        raise LeadError(f"{argument} {spec!r}: give a preset ({', '.join(LEAD_PRESETS)}) or a comma list of lead names")
    out = []
    for name in names:
        canon = name.upper()
        if canon not in LEADS:
            import difflib

            hint = difflib.get_close_matches(canon, LEADS, n=1)
            raise LeadError(
                f"{argument} {spec if isinstance(spec, str) else ','.join(names)!r}: unknown lead {name!r}; "
                f"leads are {', '.join(display_name(x) for x in LEADS)}, presets {', '.join(LEAD_PRESETS)}"
                + (f"; did you mean {display_name(hint[0])!r}?" if hint else "")
            )
        if canon in out:
            raise LeadError(f"{argument} {spec!r}: lead {display_name(canon)} appears twice")
        out.append(canon)
    return tuple(out)


def display_name(lead: str) -> str:
    """The usual spelling of a canonical lead name: AVR -> aVR, others unchanged."""
    return "a" + lead[1:] if lead.upper() in ("AVR", "AVL", "AVF") else lead


def lead_indices(available: Sequence[str], leads: Sequence[str], source: str) -> list[int]:
    """Positions of ``leads`` in ``available`` (matched case-insensitively); LeadError naming ``source`` if one is missing."""
    have = [str(a).upper() for a in available]
    missing = [lead for lead in leads if lead.upper() not in have]
    if missing:
        raise LeadError(
            f"{source}: leads {','.join(available)}; the model needs {','.join(leads)} and "
            f"{','.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
        )
    return [have.index(lead.upper()) for lead in leads]


def select_leads(dataset, leads: Sequence[str]):
    """``dataset`` (PtbxlDataset or CincDataset) with only ``leads``, in that order (the model's channels).

    Every record of a dataset holds the same leads (readers skip records that lack one, naming
    the file), so a missing lead here is a property of the whole folder: LeadError naming it.
    """
    leads = parse_leads(list(leads))
    if tuple(dataset.leads) == leads:
        return dataset
    idx = lead_indices(dataset.leads, leads, str(dataset.root or "dataset"))
    return replace(dataset, signals=np.ascontiguousarray(dataset.signals[..., idx]), leads=leads)
