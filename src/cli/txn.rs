//! `micronode txn FILE.json` (`-` reads stdin): posts the transaction to `/v1/txn` and prints
//! the server's JSON answer (docs/CLI.md). The file is checked to be JSON before it is sent.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::Method;

use super::client::{Call, Client, ClientArgs, Failure};
use super::out;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The transaction as JSON (`{"if":[…],"then":[…],"else":[…]}`); `-` reads stdin.
    #[arg(value_name = "FILE.json")]
    file: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) fn run(args: Args) -> ExitCode {
    run_txn(args).unwrap_or_else(Failure::report)
}

fn run_txn(args: Args) -> Result<ExitCode, Failure> {
    let body = read(&args.file)?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| Failure::new(format!("{} is not JSON: {e}", shown(&args.file))))?;
    let client = Client::new(&args.client)?;
    let a =
        client.block_on(client.send(Call::new(Method::POST, "/v1/txn".to_owned()).json(body)))?;
    let mut text = a.body.to_vec();
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    Ok(out::print(text))
}

fn shown(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| Failure::new(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))
}
