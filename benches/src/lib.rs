//! Criterion micro-benchmarks per layer and the `trestle-bench` load harness (a later issue).
