//! Links the `logcensus` binary as a position-dependent executable on Linux.
//!
//! A position-independent executable is relocated by the dynamic loader at every start: about
//! 89,000 relative relocations here, which write into 2 MB of read-only-after-relocation data
//! (vtables, the string tables of the bundled C libraries), a copy-on-write page fault for each
//! of its pages. That took `logcensus --version` 2.7 ms against 1.4 ms linked this way (`perf
//! stat -r 50`: 680 page faults against 143), and a run's start waits on one core for all of it.
//! The code is compiled position-independent as before; only the final link fixes its address,
//! so the libraries, the heap and the stacks are still placed at random, only the binary itself
//! is not.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
