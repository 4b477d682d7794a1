"""Product-description rendering benchmark: milliseconds per hostile input, through `render_markdown`.

    .venv/bin/python bench/markdown_render.py            # 20,000 characters (the longest description)
    .venv/bin/python bench/markdown_render.py --chars 100000

The inputs are the test suite's (tests/shop/test_product_description.py: brackets, nested quotes, lists,
emphasis, backticks, link runs…). Each figure is the best of `--repeat` runs, in wall-clock and CPU
time (on a busy machine the CPU figure is the renderer's own cost). Prints figures; never run as a test.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import django

    django.setup()
    from shop.markdown import render_markdown
    from tests.shop.test_product_description import HOSTILE

    print(f"{'input':<22} {'chars':>8} {'wall ms':>9} {'cpu ms':>8}")
    worst = 0.0
    for name, make in HOSTILE.items():
        text = make(args.chars)
        wall = cpu = float("inf")
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            render_markdown(text)
            wall = min(wall, time.perf_counter() - started)
            cpu = min(cpu, time.process_time() - started_cpu)
        worst = max(worst, wall)
        print(f"{name:<22} {len(text):>8,} {wall * 1000:>9.1f} {cpu * 1000:>8.1f}")
    print(f"{'worst':<22} {'':>8} {worst * 1000:>9.1f}")


if __name__ == "__main__":
    main()
