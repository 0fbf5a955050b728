//! The `tally` binary: parses the command line and hands off to the library.

/// mimalloc instead of the system allocator: request handling allocates many small, short-lived
/// buffers across threads, where glibc's arenas cost measurable CPU (see the README's
/// benchmark notes) and hold on to freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
