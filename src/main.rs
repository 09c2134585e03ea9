//! The `comfy-batch` binary: everything lives in the library; this only hands
//! argv to [`comfy_batch::cli::main`].

fn main() -> std::process::ExitCode {
    comfy_batch::cli::main()
}
