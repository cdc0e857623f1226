fn main() -> std::process::ExitCode {
    explorer::cli::main()
}
