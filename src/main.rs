// mimalloc: glibc malloc/free were ~15-20 % of the ingest profile (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadscore::cli::main()
}
