//! The command line: one `clap` parser and one dispatch.
//!
//! # Layout
//! - this file — [`Cli`] (the top-level flags) and [`Command`] (the subcommand tree), the
//!   dispatch in [`Cli::run`], the environment list of `--help` and config loading shared by
//!   the commands;
//! - [`serve`] — `micronode [serve]`: the server (also what runs with no subcommand);
//! - [`check_config`] — `micronode check-config` (alias `--check-config`);
//! - [`completions`] — `micronode completions bash|zsh|fish`;
//! - [`tls`] — `micronode tls dev-cert --out DIR`;
//! - [`auth`] — `micronode auth init|rotate|mint|attenuate|inspect` (offline: the key file and
//!   tokens);
//! - [`kv`] — `micronode kv get|put|delete|list|watch` (client);
//! - [`txn`] — `micronode txn FILE.json` (client);
//! - [`snapshot`] — `micronode snapshot save` (client), `verify` and `restore` (offline);
//! - [`audit`] — `micronode audit verify FILE...` (offline);
//! - [`client`] — the HTTP client of the client commands: `--url`, `--token`, `--cacert`,
//!   one connection per command, the 10 s bound, error envelope → message and exit code;
//! - [`out`] — stdout that treats a closed pipe as success (`micronode --help | head`).
//!
//! # Adding a subcommand
//! Each command is one variant of [`Command`] and one module here. For a new `kv` command:
//! 1. `src/cli/kv.rs` with `#[derive(clap::Args)] pub(crate) struct Args { … }` (nested
//!    subcommands such as `kv get|put|delete|list|watch` go in an enum inside it, under
//!    `#[command(subcommand)]`) and `pub(crate) fn run(args: Args) -> ExitCode`;
//! 2. `mod kv;` below, a `/// doc line` + `Kv(kv::Args),` variant in [`Command`], and the arm
//!    `Some(Command::Kv(args)) => kv::run(args),` in [`Cli::run`].
//!
//! Nothing else changes: help, completions and the tests' `--help` listing follow the enum.
//! A client command also flattens [`client::ClientArgs`] into its `Args` and talks to the
//! server through [`client::Client`].
//!
//! Exit codes: 0 success, 1 failure after the configuration was accepted (store, bind, final
//! flush, or stdout) or, for a client command, an error answer or an unreachable server,
//! 2 configuration or command-line error, 3 `kv watch` ended by `overflow` (docs/CLI.md).

mod audit;
mod auth;
mod check_config;
mod client;
mod completions;
mod kv;
mod out;
mod serve;
mod snapshot;
mod tls;
mod txn;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use micronode::config::{CONFIG_FILE_ENV, Config, KNOBS};

/// micronode — a small, fast HTTP key-value service.
///
/// With no subcommand it serves (the same as `micronode serve`).
#[derive(Debug, Parser)]
#[command(
    name = "micronode",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "`micronode --help` also lists every environment variable with its default; \
                  see docs/CONFIG.md.",
    after_long_help = env_help()
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    config: ConfigArgs,

    /// Validate the configuration, print it as TOML and exit (the same as `check-config`).
    #[arg(long)]
    check_config: bool,
}

/// The subcommands. One variant and one module each (see the module doc).
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP until SIGTERM/SIGINT (the default when no subcommand is given).
    Serve(ConfigArgs),
    /// Validate the configuration, print the effective configuration as TOML and exit.
    CheckConfig(ConfigArgs),
    /// Print a shell completion script to stdout.
    Completions(completions::Args),
    /// TLS helpers: `tls dev-cert --out DIR` writes a self-signed development certificate.
    Tls(tls::Args),
    /// Key file and tokens: `auth init|rotate|mint|attenuate|inspect` (offline).
    Auth(auth::Args),
    /// Client: read, write, list and watch keys on a running server.
    Kv(kv::Args),
    /// Client: run an atomic transaction from a JSON file (`-` = stdin).
    Txn(txn::Args),
    /// Save a snapshot from a running server; verify a snapshot file; restore one offline.
    Snapshot(snapshot::Args),
    /// Audit trail: `audit verify FILE...` checks the hash chain of audit files.
    Audit(audit::Args),
    /// Print the knob table of docs/CONFIG.md (generated from the knob declaration).
    #[command(hide = true)]
    ConfigDocs,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ConfigArgs {
    /// TOML config file (else `MICRONODE_CONFIG`); the environment overrides it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<String>,
}

impl Cli {
    /// Parses `std::env::args`. Help and version are printed here (exit 0, also into a closed
    /// pipe); a usage error is printed to stderr and yields exit 2.
    pub(crate) fn parse_or_exit() -> Result<Cli, ExitCode> {
        match Cli::try_parse() {
            Ok(cli) => Ok(cli),
            Err(e) if e.use_stderr() => {
                // Printing to stderr can only fail when stderr is gone; nothing left to tell.
                let _ = e.print();
                Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
            }
            Err(e) => {
                let styled = e.render();
                let text = if out::stdout_is_terminal() {
                    styled.ansi().to_string()
                } else {
                    styled.to_string()
                };
                Err(out::print(&text))
            }
        }
    }

    /// Runs the chosen command.
    pub(crate) fn run(self) -> ExitCode {
        match self.command {
            None if self.check_config => check_config::run(self.config),
            None => serve::run(self.config),
            Some(Command::Serve(args)) => serve::run(args),
            Some(Command::CheckConfig(args)) => check_config::run(args),
            Some(Command::Completions(args)) => completions::run(args, Cli::command()),
            Some(Command::Tls(args)) => tls::run(args),
            Some(Command::Auth(args)) => auth::run(args),
            Some(Command::Kv(args)) => kv::run(args),
            Some(Command::Txn(args)) => txn::run(args),
            Some(Command::Snapshot(args)) => snapshot::run(args),
            Some(Command::Audit(args)) => audit::run(args),
            Some(Command::ConfigDocs) => out::print(micronode::config::docs_table()),
        }
    }
}

/// Loads the configuration (defaults < file < environment). On error prints one line naming
/// the key or variable and gives exit code 2.
pub(crate) fn load_config(args: &ConfigArgs) -> Result<Config, ExitCode> {
    Config::from_process_env(args.config.as_deref()).map_err(|e| {
        eprintln!("micronode: configuration error: {e}");
        ExitCode::from(2)
    })
}

/// The environment section of `--help`: every knob's variable with its default, generated
/// from the knob table.
fn env_help() -> String {
    let mut s = String::from(
        "Environment (built-in defaults < --config FILE < environment; every variable also has \
         a TOML key; docs/CONFIG.md has the full table):\n",
    );
    s.push_str(&format!(
        "  {CONFIG_FILE_ENV}\n      TOML config file, when --config is not given.\n"
    ));
    for k in KNOBS {
        let mut name = k.env.to_owned();
        for alias in k.aliases {
            name.push_str(&format!(" (or {alias})"));
        }
        let default = match k.default_text() {
            d if d.is_empty() => "unset".to_owned(),
            d => d,
        };
        let allowed = k.allowed().map(|a| format!("; {a}")).unwrap_or_default();
        s.push_str(&format!(
            "  {name}  [default: {default}]\n      {} [{}{allowed}]\n",
            k.summary.trim(),
            k.key
        ));
    }
    s
}
