//! `trellis-node`: the `trellis` binary, for the cluster tests to start (the same command
//! line and allocator as `crates/server/src/main.rs`).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    trellis_server::cli::main()
}
