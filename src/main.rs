//! The `comfy-batch` binary: everything lives in the library; this only hands
//! argv to [`comfy_batch::cli::main`].

// Planning builds a patched prompt per job (many small maps and strings):
// mimalloc makes those allocations much cheaper than the system allocator
// (see `bench plan`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ignore_file_size_signal();
    comfy_batch::cli::main()
}

/// Under a file size limit (`ulimit -f`, as batch systems set), a write past
/// it raises SIGXFSZ, whose default action kills the process before it can
/// stop cleanly (remove its queued prompts, keep the log whole, exit 3).
/// Ignored, the write fails with EFBIG and takes the normal error path.
#[cfg(unix)]
fn ignore_file_size_signal() {
    // SAFETY: called first in `main`, before any other thread exists;
    // SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Other systems have no such signal: a write past a limit already fails.
#[cfg(not(unix))]
fn ignore_file_size_signal() {}
