"""Puts the repository root on ``sys.path``, for :mod:`harness` (test and benchmark support
that the installed package does not ship).

A benchmark runs as ``python3 bench/NAME.py``, so Python puts only ``bench/`` on the path; each
one imports this module first (``import bootstrap``), before anything from ``harness``.  The
tests get the same through pytest.ini's ``pythonpath``.  It is appended, so it shadows nothing.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
