"""Draw the learning-rate schedules of operators.continual.schedules into docs/schedules.png.

Run: ``python benchmarks/plot_schedules.py [PATH]``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from operators.continual.schedules import plot_schedules  # noqa: E402

if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "docs", "schedules.png")
    print(plot_schedules(path))
