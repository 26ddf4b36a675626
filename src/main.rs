fn main() {
    // Behave like other Unix tools when the reader goes away (`medic plan history | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let code = medic::cli::main_with_args(std::env::args().collect());
    std::process::exit(code);
}
