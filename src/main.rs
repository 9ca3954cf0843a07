#![forbid(unsafe_code)]

/// mimalloc gives freed pages back to the kernel soon after a burst (glibc keeps
/// the holes a burst of connections leaves resident), so idle connections cost
/// little memory; it is also faster on the request path.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(fulcrum::cli::main());
}
