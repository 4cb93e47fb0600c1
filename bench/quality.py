"""Forecast quality at an equal budget (the paper's ablation at reduced scale); see bench/ablation.py.

    .venv/bin/python bench/quality.py --iterations 400 --clips 600 --seeds 0 --out docs/quality
"""

from bench.ablation import main

if __name__ == "__main__":
    main()
