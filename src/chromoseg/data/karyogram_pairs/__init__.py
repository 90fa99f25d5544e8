"""Annotated instances from metaphase + karyogram pairs (seed paper, section II.A).

- :mod:`.layout`: parse a karyogram in the standard layout into classified cut-outs;
- :mod:`.matching`: find each cut-out in its metaphase (SIFT + DBSCAN + RANSAC pose, rotated template
  search as a fallback), carry its mask over and refine it;
- :mod:`.builder`: pair files by name, build the COCO set, summaries; :mod:`.review`: review sheets;
- :mod:`.synthetic`: synthetic karyograms from instance ground truth (for measuring the builder).

Heavy imports (OpenCV, scikit-learn, scikit-image) happen inside the functions.
"""
from .builder import BuildSummary, PairError, PairResult, build_dataset, build_pair, pair_by_name, pair_key, read_pairs_csv
from .layout import KaryogramLayout, KaryoChromosome, Slot, STANDARD_ROWS, parse_karyogram
from .matching import Match, MatchParams, PairMatch, match_pair

__all__ = [
    "BuildSummary", "PairError", "PairResult", "build_dataset", "build_pair", "pair_by_name", "pair_key",
    "read_pairs_csv", "KaryogramLayout", "KaryoChromosome", "Slot", "STANDARD_ROWS", "parse_karyogram",
    "Match", "MatchParams", "PairMatch", "match_pair",
]
