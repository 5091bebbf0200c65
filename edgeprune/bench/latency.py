"""Latency at a target's workload: warm-up, then timed runs until the p99 settles; percentiles and throughput.

Inputs are real eval sentences, encoded by the bundle's own tokenizer into a pool of batches of the
profile's batch size, either padded/truncated to the profile's fixed sequence length or, for
`sequence_length = "dataset"`, padded only to the longest sentence of each batch (real lengths).
Every runner (ORT bundle, PyTorch eager) is timed by the same loop on the same feeds.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class LatencyResult:
    samples_ms: tuple[float, ...]
    batch_size: int
    sequence_length: int | str  # the fixed length used, or "dataset"
    warmup: int

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.samples_ms), q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p95(self) -> float:
        return self.percentile(95)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples_ms))

    @property
    def throughput_per_s(self) -> float:
        """Examples per second over the timed runs (batch size x runs / total time)."""
        total_s = sum(self.samples_ms) / 1000.0
        return self.batch_size * self.runs / total_s if total_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99, "mean": self.mean, "runs": self.runs,
                "warmup": self.warmup, "batch_size": self.batch_size, "sequence_length": self.sequence_length}


def fix_length(feeds: Feeds, length: int, pad_id: int = 0) -> Feeds:
    """Pad (input ids with `pad_id`, masks and type ids with 0) or truncate every feed to `length` tokens."""
    out = {}
    for name, array in feeds.items():
        current = array.shape[1]
        if current >= length:
            out[name] = np.ascontiguousarray(array[:, :length])
        else:
            fill = pad_id if name == "input_ids" else 0
            pad = np.full((array.shape[0], length - current), fill, dtype=array.dtype)
            out[name] = np.concatenate([array, pad], axis=1)
    return out


def make_batches(encode: Callable[[list[str]], Feeds], texts: Sequence[str], batch_size: int,
                 sequence_length: int | str, max_length: int, pad_id: int = 0,
                 pool: int = 32) -> tuple[list[Feeds], int | str]:
    """A pool of up to `pool` batches of real sentences, and the sequence length actually used."""
    if not texts:
        raise ValueError("no texts to build batches from")
    n_batches = min(pool, -(-len(texts) // batch_size))  # ceil: every sentence once, up to `pool` batches
    chunk = list(itertools.islice(itertools.cycle(texts), n_batches * batch_size))
    batches = [encode(chunk[i:i + batch_size]) for i in range(0, len(chunk), batch_size)]
    if sequence_length == "dataset":
        return batches, "dataset"
    length = min(int(sequence_length), max_length)
    return [fix_length(b, length, pad_id) for b in batches], length


def measure_latency(run: Callable[[Feeds], Any], batches: Sequence[Feeds], sequence_length: int | str, *,
                    warmup: int = 20,
                    min_runs: int = 200, max_runs: int | None = None, rel_tol: float = 0.05,
                    progress: str | None = None) -> LatencyResult:
    """Time `run(feeds)` over the pool of batches: `warmup` untimed runs, then at least `min_runs` timed
    ones, continuing in rounds of `min_runs // 2` while the p99 still moves by more than `rel_tol`
    (up to `max_runs`, default 4 x `min_runs`)."""
    from tqdm.auto import tqdm

    max_runs = max(max_runs or 4 * min_runs, min_runs)
    feeds = itertools.cycle(batches)
    for _ in range(warmup):
        run(next(feeds))
    samples: list[float] = []
    bar = tqdm(total=min_runs, desc=progress or "latency", unit="run", disable=None, leave=False)
    step = max(min_runs // 2, 1)
    target, previous_p99 = min_runs, None
    try:
        while True:
            while len(samples) < target:
                batch = next(feeds)
                start = time.perf_counter_ns()
                run(batch)
                samples.append((time.perf_counter_ns() - start) / 1e6)
                bar.update(1)
            p99 = float(np.percentile(samples, 99))
            settled = previous_p99 is not None and abs(p99 - previous_p99) <= rel_tol * previous_p99
            if settled or target >= max_runs:
                break
            previous_p99, target = p99, min(target + step, max_runs)
            bar.total = target
            bar.refresh()
    finally:
        bar.close()
    batch_size = next(iter(batches[0].values())).shape[0]
    return LatencyResult(tuple(samples), batch_size, sequence_length, warmup)
