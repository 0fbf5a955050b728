//! The `tally` binary: parses the command line and hands off to the library.

fn main() -> std::process::ExitCode {
    tally::cli::main()
}
