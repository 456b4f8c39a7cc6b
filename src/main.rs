use clap::Parser;

// Many small short-lived allocations per request: mimalloc's thread caches beat glibc's here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = dss::cli::Cli::parse();
    dss::cli::init_logging();
    std::process::exit(dss::cli::run(cli));
}
