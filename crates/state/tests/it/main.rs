//! Integration tests of `logcensus-state`: one binary, a module per concern.

mod coverage;
mod merge;
mod partials;
mod publish;
mod support;
