"""Collecting problems found in input data, so that a batch goes on and says what it skipped."""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("chromoseg.data")


@dataclass
class Problem:
    file: str
    problem: str
    action: str = "skipped"  # "skipped" (left out) or "kept" (used, with a warning)
    kind: str = "other"  # short key for counting, e.g. "label", "empty-mask", "unreadable"

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} ({self.action})"


@dataclass
class ProblemLog:
    """Problems found while reading a data set; each is logged once as it is found."""

    problems: list[Problem] = field(default_factory=list)
    quiet: bool = False

    def add(self, file, problem: str, *, action: str = "skipped", kind: str = "other") -> None:
        p = Problem(str(file), problem, action, kind)
        self.problems.append(p)
        if not self.quiet:
            log.warning("%s", p)

    def extend(self, other: "ProblemLog") -> None:
        self.problems.extend(other.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f"{p.kind} ({p.action})" for p in self.problems))

    def summary(self) -> str:
        if not self.problems:
            return "no problems found"
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts().items()))
        return f"{len(self.problems)} problems: {parts}"

    def write(self, path) -> None:
        from chromoseg.atomic import write_text

        rows = [p.__dict__ for p in self.problems]
        write_text(path, json.dumps(rows, indent=1))
