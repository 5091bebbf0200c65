"""Benchmark a bundle on this host for a target: latency, peak memory, size and accuracy, beside baselines.

Modules, one job each: `latency` (timed runs, percentiles), `memory` (peak RSS of a fresh process),
`accuracy` (eval set, scoring), `runners` (bundle and PyTorch runners behind one interface), `baselines`
(PyTorch eager, ORT fp32/int8 dense), `report` (report.json/report.md), `plots` (PNGs) and `benchmark`
(the order of work). Host description and honest matching live in `edgeprune.host`.
Nothing is imported here, so `python -m edgeprune.bench.memory` stays torch-free.
"""
