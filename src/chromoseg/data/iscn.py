"""ISCN karyotype strings: a small parser for the truth and a formatter for our summaries.

The notation sits in ``chromoseg.data`` beside the class names it spells, so that the M-FISH importer
reads its cases' karyotypes without importing ``chromoseg.karyotype``; ``chromoseg.karyotype.iscn``
is the same module under its older name.

Only the part of ISCN (International System for Human Cytogenomic Nomenclature) that counting can
use is understood:

* the total chromosome count (``46``), the sex-chromosome complement (``XY``, ``XX``, ``X``, ``XXY``);
* numerical changes of whole chromosomes: ``-8`` (loss), ``+21`` (gain), ``+?13`` (gain, the
  identity questioned);
* structural rearrangements ``t(4;9)``, ``der(5)``, ``ins(11;8)`` / ``Ins(11;8)``, ``r(9)``, and the
  less common ``i``, ``del``, ``dup``, ``inv``, ``add``, ``dic``, ``idic``, ``mar`` - recorded as
  structural, with the classes involved; a leading ``+`` (``+der(5)``, ``+t(20;5)``, ``+r(9)``) means an
  *extra* derivative chromosome.

Expected per-class counts (:func:`expected_counts`) start from two of each autosome and the sex
complement, apply the numerical changes, and count an extra derivative (``+der(5)``, ``+t(20;5)``) for
its first-named class. Every class named in a structural rearrangement is returned as *uncertain*:
in an M-FISH label map a derivative chromosome is painted in the colours of its parts, so the number
of pieces of those classes (and hence instances derived from the map) need not match the count of
chromosomes. A ``?`` also makes its class uncertain.

The M-FISH ``case_info.txt`` files carry junk after the karyotype (NUL bytes, a lab's name glued to
the last token: ``47,XX,+r(9)acare Hermann Cytogenetics``). :func:`read_case_info` reads bytes,
decodes latin-1, keeps the first line; :func:`parse_karyotype` keeps the longest prefix made of valid
tokens and reports what it cut in ``Karyotype.junk``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from chromoseg.data.classes import CLASS_NAMES, NUM_CLASSES

X_ID = 23
Y_ID = 24
AUTOSOMES = tuple(range(1, 23))

#: structural rearrangement names understood (lower case).
STRUCTURAL_NAMES = ("t", "der", "ins", "r", "i", "del", "dup", "inv", "add", "dic", "idic", "rob")

_CHROM = r"(?:[1-9]|1[0-9]|2[0-2]|X|Y)"
_NUMERICAL_RE = re.compile(rf"(?P<sign>[+-])\s*(?P<q>\?)?\s*(?P<chrom>{_CHROM})(?![0-9(])", re.I)
_STRUCT_RE = re.compile(
    r"(?P<sign>[+-])?\s*(?P<q>\?)?\s*(?P<name>idic|dic|der|ins|inv|dup|del|add|rob|t|r|i)"
    r"\s*\((?P<chroms>[0-9XY;?\s]+)\)(?:\((?P<bands>[^()]*)\))?",
    re.I,
)
_MAR_RE = re.compile(r"(?P<sign>\+)?\s*(?P<count>\d+)?\s*mar(?P<n>\d+)?", re.I)
_TOTAL_RE = re.compile(r"\s*(?P<total>\d{1,3})(?:~(?P<total2>\d{1,3}))?\s*")


def chrom_to_id(token: str) -> int:
    """'1'..'22' -> 1..22, 'X' -> 23, 'Y' -> 24."""
    t = token.strip().upper()
    if t == "X":
        return X_ID
    if t == "Y":
        return Y_ID
    v = int(t)
    if not 1 <= v <= 22:
        raise ValueError(f"not a chromosome: {token!r}")
    return v


def id_to_chrom(class_id: int) -> str:
    return CLASS_NAMES[int(class_id) - 1]


@dataclass
class Structural:
    """One structural rearrangement, e.g. ``t(9;22)`` or ``+der(5)``."""

    name: str  # lower case: "t", "der", "ins", "r", ...
    classes: tuple[int, ...]  # class ids named in the first parentheses, in order
    extra: bool = False  # written with a leading "+": an additional derivative chromosome
    lost: bool = False  # written with a leading "-"
    text: str = ""


@dataclass
class Karyotype:
    """A parsed ISCN karyotype (one cell line)."""

    text: str  # the cleaned karyotype string that was parsed
    total: int | None  # declared chromosome count
    sex: str  # sex-chromosome complement as written, e.g. "XY", "XX", "X", "XXY"; "" when absent
    gains: dict[int, int] = field(default_factory=dict)  # class id -> number of "+N" (incl. "+?N")
    losses: dict[int, int] = field(default_factory=dict)  # class id -> number of "-N"
    questioned: set[int] = field(default_factory=set)  # classes written with "?" (e.g. "+?13")
    structural: list[Structural] = field(default_factory=list)
    markers: int = 0  # "+mar" chromosomes (unidentified)
    junk: str = ""  # what was cut from the end
    warnings: list[str] = field(default_factory=list)

    @property
    def n_x(self) -> int:
        return self.sex.upper().count("X")

    @property
    def n_y(self) -> int:
        return self.sex.upper().count("Y")

    @property
    def structural_classes(self) -> set[int]:
        out: set[int] = set()
        for s in self.structural:
            out.update(s.classes)
        return out

    @property
    def computed_total(self) -> int:
        """46 adjusted by the sex complement, the numerical changes, extra derivatives and markers."""
        n = 44 + self.n_x + self.n_y
        n += sum(self.gains.values()) - sum(self.losses.values())
        n += sum(1 for s in self.structural if s.extra) - sum(1 for s in self.structural if s.lost)
        n += self.markers
        return n

    @property
    def consistent(self) -> bool:
        return self.total is None or self.total == self.computed_total

    def expected_counts(self) -> dict[int, int]:
        return expected_counts(self)[0]

    def uncertain_classes(self) -> set[int]:
        return expected_counts(self)[1]


def clean_karyotype_text(raw: str | bytes) -> str:
    """First line of a case_info text, NUL bytes and surrounding blanks removed (bytes: latin-1)."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    raw = raw.replace("\x00", "\n")
    for line in raw.splitlines():
        line = line.strip()
        if line:
            return line
    return ""


def read_case_info(path: str | Path) -> Karyotype:
    """Parse an M-FISH ``case_info.txt`` (bytes -> latin-1 -> first line -> junk cut)."""
    return parse_karyotype(Path(path).read_bytes())


def _match_token(s: str, pos: int):
    """Match one abnormality token at ``pos``; return (kind, match) or (None, None)."""
    for kind, rx in (("struct", _STRUCT_RE), ("num", _NUMERICAL_RE), ("mar", _MAR_RE)):
        m = rx.match(s, pos)
        if m and m.group(0).strip():
            return kind, m
    return None, None


def parse_karyotype(raw: str | bytes) -> Karyotype:
    """Parse an ISCN karyotype such as ``45,XY,-8`` or ``47,XY,+?13,t(3;13)``.

    Tolerates blanks after commas, any case (``Ins``), NUL bytes and trailing junk (cut, kept in
    ``junk``). Only the first cell line is read (``/`` starts another; it is cut with a warning).
    Raises ``ValueError`` when not even a chromosome count can be read.
    """
    text = clean_karyotype_text(raw)
    kt = Karyotype(text="", total=None, sex="")
    if "/" in text:
        text, rest = text.split("/", 1)
        kt.warnings.append(f"mosaic karyotype: only the first cell line is used (cut '/{rest}')")
    m = _TOTAL_RE.match(text)
    if not m:
        raise ValueError(f"not an ISCN karyotype (no chromosome count at the start): {text!r}")
    kt.total = int(m.group("total"))
    if m.group("total2"):
        kt.warnings.append(f"count range {m.group(0).strip()}: the lower bound is used")
    pos = m.end()
    consumed = pos
    if pos < len(text) and text[pos] == ",":
        pos += 1
        ms = re.compile(r"\s*([XY]+)", re.I).match(text, pos)
        if ms:
            kt.sex = ms.group(1).upper()
            pos = ms.end()
            consumed = pos
            # tokens after the sex complement
            while pos < len(text):
                mc = re.compile(r"\s*,\s*").match(text, pos)
                if not mc:
                    break
                kind, mt = _match_token(text, mc.end())
                if kind is None:
                    break
                pos = mt.end()
                consumed = pos
                _apply_token(kt, kind, mt)
        else:
            kt.warnings.append("no sex-chromosome complement after the count")
    kt.junk = text[consumed:].strip()
    kt.text = text[:consumed].strip()
    if kt.junk:
        kt.warnings.append(f"ignored trailing text {kt.junk!r}")
    if not kt.consistent:
        kt.warnings.append(
            f"declared count {kt.total} differs from the count implied by the changes ({kt.computed_total})"
        )
    return kt


def _apply_token(kt: Karyotype, kind: str, m: re.Match) -> None:
    if kind == "num":
        c = chrom_to_id(m.group("chrom"))
        target = kt.gains if m.group("sign") == "+" else kt.losses
        target[c] = target.get(c, 0) + 1
        if m.group("q"):
            kt.questioned.add(c)
    elif kind == "struct":
        chroms = [t for t in re.split(r"[;\s]+", m.group("chroms")) if t and t != "?"]
        classes: list[int] = []
        for t in chroms:
            try:
                classes.append(chrom_to_id(t.strip("?")))
            except ValueError:
                kt.warnings.append(f"unknown chromosome {t!r} in {m.group(0)!r}")
        s = Structural(
            name=m.group("name").lower(),
            classes=tuple(classes),
            extra=m.group("sign") == "+",
            lost=m.group("sign") == "-",
            text=m.group(0).strip(),
        )
        if m.group("q"):
            kt.questioned.update(classes)
        kt.structural.append(s)
    elif kind == "mar":
        kt.markers += int(m.group("count") or 1)


def expected_counts(kt: Karyotype) -> tuple[dict[int, int], set[int]]:
    """Expected number of chromosomes per class 1-24 and the set of classes whose count is uncertain.

    Two of each autosome, X and Y from the sex complement; ``+N``/``-N`` applied; an extra
    derivative (``+der(5)``, ``+t(20;5)``, ``+r(9)``) counts for its first-named class. Uncertain:
    every class named in a structural rearrangement or with a ``?``, and all classes when the
    declared total disagrees with the changes (the string itself is then in doubt).
    """
    counts = {c: 2 for c in AUTOSOMES}
    counts[X_ID] = kt.n_x
    counts[Y_ID] = kt.n_y
    for c, k in kt.gains.items():
        counts[c] += k
    for c, k in kt.losses.items():
        counts[c] -= k
    for s in kt.structural:
        if s.classes and (s.extra or s.lost):
            counts[s.classes[0]] += 1 if s.extra else -1
    uncertain = set(kt.structural_classes) | set(kt.questioned)
    if not kt.consistent:  # e.g. "46,XY,-8": the string contradicts itself, so no count is sure
        uncertain = set(range(1, NUM_CLASSES + 1))
    counts = {c: max(0, v) for c, v in counts.items()}
    return counts, uncertain


def sex_call(n_x: int, n_y: int) -> str:
    """Sex-chromosome complement from X and Y counts: 'XY', 'XX', 'X', 'XXY', ...; '' when none."""
    return "X" * max(0, int(n_x)) + "Y" * max(0, int(n_y))


def format_iscn(
    counts: dict[int, int],
    total: int | None = None,
    questioned: set[int] | frozenset[int] = frozenset(),
) -> str:
    """An ISCN-style summary of per-class counts, e.g. ``46,XY``, ``45,XY,-8``, ``47,XX,+21``, ``45,X``.

    ``counts`` maps class id (1-24) to the number of chromosomes of that class. ``total`` defaults to
    the sum of ``counts`` (pass the number of all chromosomes to include unassigned ones). Autosome
    deviations from two are listed in class order, one ``-N``/``+N`` per chromosome; the sex
    complement is written out (``XXY``, ``X``), as ISCN does, not as ``+X``. A class in ``questioned``
    gets ``?`` (``+?13``). ISCN has no form for a cell without any sex chromosome; we write ``?`` for
    the complement (``44,?``) and the counting code raises a flag.
    """
    total = int(sum(counts.values()) if total is None else total)
    sex = sex_call(counts.get(X_ID, 0), counts.get(Y_ID, 0)) or "?"
    parts = [str(total), sex]
    for c in AUTOSOMES:
        d = int(counts.get(c, 0)) - 2
        q = "?" if c in questioned else ""
        if d < 0:
            parts.extend([f"-{q}{c}"] * (-d))
        elif d > 0:
            parts.extend([f"+{q}{c}"] * d)
    return ",".join(parts)


def karyotype_summary(kt: Karyotype) -> str:
    """The numerical part of a parsed karyotype in our summary form (structural changes dropped)."""
    counts, _ = expected_counts(kt)
    return format_iscn(counts, total=kt.total, questioned=kt.questioned)
