//! Thin entry point: parse arguments, run, map errors to exit codes.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(metaopt::cli::main());
}
