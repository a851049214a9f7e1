//! The `portcullis` binary: everything lives in the library; see `cli`. The binary picks
//! the allocator: mimalloc, measured cheaper than glibc malloc for the gateway's many small
//! short-lived allocations (docs/PERFORMANCE.md).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    portcullis::cli::main()
}
