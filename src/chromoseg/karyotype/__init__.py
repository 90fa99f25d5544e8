"""From chromosome instances to a karyotype: karyogram, counts, ISCN summary, report.

- :mod:`chromoseg.karyotype.iscn` - ISCN parser (``45,XY,-8``, ``47,XX,+r(9)``, ...) for the truth,
  expected per-class counts, and the formatter of our summaries (the module
  :mod:`chromoseg.data.iscn`, which the M-FISH importer also reads).
- :mod:`chromoseg.karyotype.counts` - per-class counts, sex call, ISCN-style summary and flags of one
  metaphase (``count_karyotype``).
- :mod:`chromoseg.karyotype.layout` - the karyogram image (``render_karyogram``,
  ``instances_from_coco``).
- :mod:`chromoseg.karyotype.overlay` - masks, rotated boxes and labels drawn on the metaphase.
- :mod:`chromoseg.karyotype.report` - one self-contained HTML page and a CSV for a set of metaphases.
- :mod:`chromoseg.karyotype.show` - a set's annotations drawn over its images (``chromoseg data show``).
- ``chromoseg karyogram`` (the command) is :mod:`chromoseg.cli.karyogram`.

All of them take instances as produced from chromoseg's COCO format (ground truth or predictions with
``score`` and optional ``class_scores``). Nothing here imports torch.
"""
