"""``python -m chromoseg.cli ...`` (and ``torchrun ... -m chromoseg.cli train ...``): the ``chromoseg`` command."""
import sys

from chromoseg.cli import main

sys.exit(main())
