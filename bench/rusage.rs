//! Runs a command and reports its wall time, CPU time and peak RSS.
//!
//!   rusage REPORT_FILE CMD [ARGS...]
//!
//! Writes "wall_us user_us sys_us maxrss_kb" to REPORT_FILE and exits with the command's code.
//! Built by bench/core.sh with plain rustc. It exists because ru_maxrss of a child started from
//! python carries python's own RSS (~15 MiB): a vfork'd child's exec records the parent's
//! high-water mark. This helper is small, so its floor is ~2 MiB.
use std::io::Write;
use std::process::Command;
use std::time::Instant;

#[repr(C)]
struct Rusage {
    utime_sec: i64,
    utime_usec: i64,
    stime_sec: i64,
    stime_usec: i64,
    maxrss: i64,
    rest: [i64; 13],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

const RUSAGE_CHILDREN: i32 = -1;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: rusage REPORT_FILE CMD [ARGS...]");
        std::process::exit(2);
    }
    let start = Instant::now();
    let status = match Command::new(&args[1]).args(&args[2..]).status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rusage: cannot run {}: {e}", args[1]);
            std::process::exit(127);
        }
    };
    let wall = start.elapsed();
    let mut ru: Rusage = unsafe { std::mem::zeroed() };
    if unsafe { getrusage(RUSAGE_CHILDREN, &mut ru) } != 0 {
        eprintln!("rusage: getrusage failed");
        std::process::exit(2);
    }
    let mut f = std::fs::File::create(&args[0]).expect("report file");
    writeln!(
        f,
        "{} {} {} {}",
        wall.as_micros(),
        ru.utime_sec * 1_000_000 + ru.utime_usec,
        ru.stime_sec * 1_000_000 + ru.stime_usec,
        ru.maxrss
    )
    .expect("write report");
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    std::process::exit(code);
}
