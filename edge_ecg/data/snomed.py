"""SNOMED CT codes (the PhysioNet/CinC 2020-2021 ``#Dx`` labels) to the five PTB-XL superclasses.

The table is ``snomed_ptbxl.csv`` beside this module, one row for each of the 133 codes of
the 2021 Challenge's official tables (``dx_mapping_scored.csv``, ``dx_mapping_unscored.csv``):

* ``ptbxl_statements``: the PTB-XL SCP statement(s) the code corresponds to (``|`` when the
  code is less specific than PTB-XL, e.g. "AV block" of unstated degree: ``1AVB|2AVB|3AVB``;
  every listed statement then has the same superclass), empty when PTB-XL has none (axis
  deviation, clinical diagnoses such as heart failure, rhythms PTB-XL does not code);
* ``superclass``: the ``diagnostic_class`` of those statements in PTB-XL's
  ``scp_statements.csv`` when they are diagnostic, else empty (rhythm and form statements such
  as sinus rhythm, atrial fibrillation or T-wave inversion have no superclass in PTB-XL
  either); ``tests/test_cinc.py`` holds every row to ``scp_statements.csv``;
* ``sinus``: 1 for the four sinus rhythms (sinus rhythm, bradycardia, tachycardia, arrhythmia);
* ``note``: why, where the choice is not a plain name match.

A record's superclasses are those of its codes, as the PTB-XL reader gives a record every
superclass of its statements. Codes that give no superclass are never dropped silently:
:class:`CodeLabels` lists them (mapped without superclass, or unknown to the table) and the
CinC reader counts them per source.

**Rhythm-only records.** The CinC sources have no code for "normal ECG": a reader who finds
nothing abnormal codes only the rhythm (426783006 sinus rhythm). Without a policy no CinC
record would be NORM and the NORM AUC would be undefined. ``rhythm_only`` decides what a
record whose codes give no superclass becomes:

* ``"sinus"`` (default): NORM when every code is a sinus rhythm (sinus rhythm, bradycardia,
  tachycardia or arrhythmia), else unlabelled. In the 987 shared PTB-XL records, 12 of 18
  sinus-bradycardia, 8 of 23 sinus-tachycardia and 26 of 34 sinus-arrhythmia records also
  carry NORM, so a sinus rate alone does not make an ECG abnormal;
* ``"nsr"``: NORM only when every code is 426783006 (sinus rhythm);
* ``"unlabelled"``: never NORM; such records are left out (and NORM has no positive record).

A record with any other code lacking a superclass (atrial fibrillation, axis deviation, low
QRS voltage, a code unknown to the table...) is unlabelled under every policy: those codes
say nothing about infarction, ST-T change, conduction or hypertrophy, and nothing that makes
the ECG normal.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from edge_ecg import CLASSES

TABLE_FILE = Path(__file__).with_name("snomed_ptbxl.csv")
RHYTHM_ONLY_POLICIES: tuple[str, ...] = ("sinus", "nsr", "unlabelled")
SINUS_RHYTHM = "426783006"


@dataclass(frozen=True)
class SnomedRow:
    code: str
    abbreviation: str
    term: str
    statements: tuple[str, ...]
    superclass: str  # one of CLASSES, or "" (no superclass)
    sinus: bool
    note: str


@dataclass(frozen=True)
class CodeLabels:
    """The superclasses of one record's codes, and the codes that gave none."""

    classes: tuple[str, ...]  # superclasses, in CLASSES order
    no_superclass: tuple[str, ...]  # codes in the table without a superclass (rhythm, form, axis...)
    unknown: tuple[str, ...]  # codes not in the table
    norm_from_rhythm: bool = False  # NORM given by the rhythm-only policy

    @property
    def labelled(self) -> bool:
        return bool(self.classes)


@lru_cache(maxsize=None)
def load_table(path: str | None = None) -> dict[str, SnomedRow]:
    """The mapping table as ``{code: SnomedRow}``; ValueError naming the file on a bad row."""
    path = Path(path) if path else TABLE_FILE
    rows: dict[str, SnomedRow] = {}
    with open(path, newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))  # the first line is a comment
        for n, r in enumerate(csv.DictReader(lines), start=3):
            code = r["snomed_code"].strip()
            if not code.isdigit() or code in rows:
                raise ValueError(f"{path}, line {n}: snomed_code {code!r} is not a new numeric code")
            if r["superclass"] not in ("", *CLASSES):
                raise ValueError(f"{path}, line {n}: superclass {r['superclass']!r} is not one of {', '.join(CLASSES)}")
            rows[code] = SnomedRow(
                code=code,
                abbreviation=r["abbreviation"],
                term=r["term"],
                statements=tuple(s for s in r["ptbxl_statements"].split("|") if s),
                superclass=r["superclass"],
                sinus=r["sinus"] == "1",
                note=r["note"],
            )
    return rows


def map_codes(codes: Iterable[str], rhythm_only: str = "sinus", table: dict[str, SnomedRow] | None = None) -> CodeLabels:
    """Superclasses of a record's SNOMED CT codes under the ``rhythm_only`` policy (see the module docstring)."""
    if rhythm_only not in RHYTHM_ONLY_POLICIES:
        raise ValueError(f"rhythm_only must be one of {', '.join(RHYTHM_ONLY_POLICIES)}, got {rhythm_only!r}")
    table = load_table() if table is None else table
    codes = list(dict.fromkeys(str(c).strip() for c in codes))  # a code listed twice counts once (E00015 does)
    found, none, unknown = set(), [], []
    for code in codes:
        row = table.get(code)
        if row is None:
            unknown.append(code)
        elif row.superclass:
            found.add(row.superclass)
        else:
            none.append(code)
    norm = False
    if not found and codes and not unknown:
        if rhythm_only == "sinus":
            norm = all(table[c].sinus for c in codes)
        elif rhythm_only == "nsr":
            norm = all(c == SINUS_RHYTHM for c in codes)
        if norm:
            found.add("NORM")
    return CodeLabels(tuple(c for c in CLASSES if c in found), tuple(none), tuple(unknown), norm)


def describe(code: str) -> str:
    """'426783006 (NSR, sinus rhythm)' or '123 (not in the SNOMED table)'."""
    row = load_table().get(code)
    return f"{code} ({row.abbreviation}, {row.term})" if row else f"{code} (not in the SNOMED table)"
