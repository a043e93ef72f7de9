//! `micronode audit verify FILE...` (docs/CLI.md): checks an audit trail's hash chain offline
//! (`micronode::audit`).

use std::path::PathBuf;
use std::process::ExitCode;

use micronode::audit;

use super::client::Failure;
use super::out;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Check the hash chain of audit files, given in order: rotated files oldest first, then
    /// the current file (`audit.log.* audit.log`). Prints a JSON summary, or exits 1 naming
    /// the first bad line.
    Verify {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> ExitCode {
    match args.command {
        AuditCommand::Verify { files } => match audit::verify(&files) {
            Ok(summary) => match serde_json::to_string(&summary) {
                Ok(text) => out::print(text + "\n"),
                Err(e) => Failure::new(format!("cannot write the answer as JSON: {e}")).report(),
            },
            Err(e) => Failure::new(e.to_string()).report(),
        },
    }
}
