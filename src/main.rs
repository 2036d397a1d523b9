fn main() -> std::process::ExitCode {
    leadscore::cli::main()
}
