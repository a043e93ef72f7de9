//! The `micronode` binary: parse the command line, then run the chosen command. The commands
//! live in `src/cli/` (its module doc lists them and says how to add one).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::Cli::parse_or_exit() {
        Ok(cli) => cli.run(),
        Err(code) => code,
    }
}
