//! Writing to stdout without panicking on a closed pipe: `micronode --help | head -1` exits 0.
//! (`print!` panics when the reader has gone; a reader that has seen enough is not an error.)

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

/// Writes `text` (UTF-8 or raw bytes) to stdout. A closed pipe is success; any other write error is reported on
/// stderr and gives exit code 1.
pub(crate) fn print(text: impl AsRef<[u8]>) -> ExitCode {
    match write_stdout(text.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("micronode: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

/// Writes and flushes `bytes`; `BrokenPipe` counts as done.
fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub(crate) fn stdout_is_terminal() -> bool {
    io::stdout().is_terminal()
}
