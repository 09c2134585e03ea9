//! The `comfy-batch` binary: everything lives in the library; this only hands
//! argv to [`comfy_batch::cli::main`].

// Planning builds a patched prompt per job (many small maps and strings):
// mimalloc makes those allocations much cheaper than the system allocator
// (see `bench plan`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    comfy_batch::cli::main()
}
