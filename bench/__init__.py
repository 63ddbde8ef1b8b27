"""megahub benchmarks: each one measures the project and its baseline in the same run.

See docs/benchmarks.md for the results and `bench/run.py --help` for how to run them.
"""
