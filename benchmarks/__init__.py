"""Side-by-side timings of nnback against its reference, PyTorch and scikit-learn.

Run ``python benchmarks/run.py --help`` for the options.
"""
