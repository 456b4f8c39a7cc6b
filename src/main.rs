use clap::Parser;

fn main() {
    let cli = dss::cli::Cli::parse();
    dss::cli::init_logging();
    std::process::exit(dss::cli::run(cli));
}
