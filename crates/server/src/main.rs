//! `trellis`: the Trellis node binary (see [`trellis_server::cli`]).

// glibc malloc showed up as ~13 % of the node's CPU under load (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    trellis_server::cli::main()
}
