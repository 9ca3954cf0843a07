#![forbid(unsafe_code)]

fn main() {
    std::process::exit(fulcrum::cli::main());
}
