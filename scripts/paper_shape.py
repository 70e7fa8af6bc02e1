"""Paper-shape dry run (random weights of the published Qwen3 shapes, every notebook's paper code path).

    .venv/bin/python scripts/paper_shape.py --model 1.7B --device cpu --notebooks 01 02 04
    .venv/bin/python scripts/paper_shape.py --model 8B --device cuda     # scripts/paper_shape_gpu.sh

Results: results/paper-shape/<device>_<model>.{csv,json,md}; see qscope_utils/testing/paper_shape.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qscope_utils.testing.paper_shape import main  # noqa: E402

if __name__ == "__main__":
    main()
