//! The `opsdeck` binary: parse the command line and hand over to the library.

/// mimalloc rather than the system allocator (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    opsdeck::cli::main()
}
