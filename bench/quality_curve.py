"""Test MSE per lead time of one variant as training goes on (see bench.ablation.curve_main).

    .venv/bin/python bench/quality_curve.py --dataset storm-cells --variant predrnn_v1 --iterations 1600 \\
        --eval-at 200,400,800,1200 --out docs/quality/curves/storm-cells_predrnn_v1_1600.json
"""

from bench.ablation import curve_main

if __name__ == "__main__":
    curve_main()
