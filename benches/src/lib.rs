//! Benchmarks for logcensus (see benches/README.md).
