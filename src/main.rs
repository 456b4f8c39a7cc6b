//! The `dss` command (native only; the wasm32 build of this crate is the edge worker's library).

#[cfg(not(target_arch = "wasm32"))]
// Many small short-lived allocations per request: mimalloc's thread caches beat glibc's here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    use clap::Parser;
    let cli = dss::cli::Cli::parse();
    dss::cli::init_logging();
    std::process::exit(dss::cli::run(cli));
}

#[cfg(target_arch = "wasm32")]
fn main() {}
