"""Compare runs from their folders: ``python report.py outputs/train/multirun_<time>`` (README).

Writes report.md, report.csv and report.png; reads only the run folders (no network, no W&B).
"""

import sys

from cnnzoo.report import main

if __name__ == "__main__":
    sys.exit(main())
