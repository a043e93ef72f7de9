//! `micronode auth init|rotate|mint|attenuate|inspect`: the key ring and tokens, offline
//! (docs/CLI.md, docs/SECURITY.md "Tokens"); `auth revoke` asks a server to revoke a token.
//! `mint` and `attenuate` print the token and nothing else; no other command prints a token
//! or a secret. Exit 0 on success, 1 when a file or a token is refused (one line on stderr),
//! 2 on a command-line error.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use http::Method;
use micronode::auth::{self, Caveat, KeyRing, Ops, keyring, token};
use micronode::handlers::kv::valid_bucket;

use super::client::{Call, Client, ClientArgs, Failure};
use super::out;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuthCommand {
    /// Create a key file (mode 0600) holding one new random key; never overwrites.
    Init {
        /// The key file to create.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
    /// Add a newer key to a key file; it mints from now on, every older key still verifies.
    Rotate {
        /// The key file to extend (rewritten atomically, mode 0600).
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
    },
    /// Mint a token with the newest key and print it. No restriction given = every op
    /// (admin included) on every bucket, forever.
    Mint {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
        /// Tenant the token speaks for: 1-63 characters of a-z 0-9 . _ -
        #[arg(long, value_name = "T", value_parser = parse_tenant)]
        tenant: String,
        #[command(flatten)]
        caveats: CaveatArgs,
    },
    /// Add restrictions to a token without the key and print the new token. It allows only
    /// what the original allows and what the new restrictions allow.
    Attenuate {
        /// The token, or `-` to read it from stdin (keeps it out of the process list).
        #[arg(value_name = "TOKEN")]
        token: String,
        #[command(flatten)]
        caveats: CaveatArgs,
    },
    /// Print what a token claims as JSON (key id, nonce, tenant, caveats); nothing is
    /// verified and the tag is never shown.
    Inspect {
        /// The token, or `-` to read it from stdin.
        #[arg(value_name = "TOKEN")]
        token: String,
    },
    /// Revoke a token and every attenuation of it on a server (`POST /v1/auth/revoke`, with
    /// the admin token of --token / MICRONODE_TOKEN); durable before the server answers.
    /// Prints the server's JSON answer.
    Revoke {
        /// The token to revoke, `-` to read it from stdin, or with --nonce its nonce.
        #[arg(value_name = "TOKEN")]
        victim: String,
        /// TOKEN is a nonce (32 hex digits, as `auth inspect` shows it), not a token.
        #[arg(long)]
        nonce: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The restrictions `mint` and `attenuate` can add.
#[derive(Debug, clap::Args)]
struct CaveatArgs {
    /// Only this bucket.
    #[arg(long, value_name = "B", value_parser = parse_bucket)]
    bucket: Option<String>,
    /// Only keys (and list/watch prefixes) starting with P.
    #[arg(long, value_name = "P", value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Only these ops, comma-separated: get, list, watch, put, delete, txn, admin.
    #[arg(long, value_name = "OPS", value_parser = Ops::parse_list)]
    ops: Option<Ops>,
    /// Valid for SECS seconds from now (a `not_after` caveat).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    ttl: Option<u64>,
}

impl CaveatArgs {
    fn caveats(self, now: u64) -> Vec<Caveat> {
        let mut v = Vec::new();
        v.extend(self.bucket.map(Caveat::Bucket));
        v.extend(self.prefix.map(Caveat::Prefix));
        v.extend(self.ops.map(Caveat::Ops));
        v.extend(self.ttl.map(|t| Caveat::NotAfter(now.saturating_add(t))));
        v
    }

    fn is_empty(&self) -> bool {
        self.bucket.is_none() && self.prefix.is_none() && self.ops.is_none() && self.ttl.is_none()
    }
}

fn parse_tenant(s: &str) -> Result<String, String> {
    if token::valid_tenant(s) {
        Ok(s.to_owned())
    } else {
        Err("1-63 characters of a-z 0-9 . _ -".to_owned())
    }
}

fn parse_bucket(s: &str) -> Result<String, String> {
    if valid_bucket(s) {
        Ok(s.to_owned())
    } else {
        Err("not a valid bucket name (docs/API.md)".to_owned())
    }
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if (1..=token::MAX_PREFIX_CAVEAT_BYTES).contains(&s.len()) {
        Ok(s.to_owned())
    } else {
        Err(format!("1-{} bytes", token::MAX_PREFIX_CAVEAT_BYTES))
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let now = auth::now_unix();
    let result = match args.command {
        AuthCommand::Init { keys } => keyring::init(&keys, now)
            .map(|ring| {
                format!(
                    "created {} with key {}\n",
                    keys.display(),
                    ring.newest().id()
                )
            })
            .map_err(|e| e.to_string()),
        AuthCommand::Rotate { keys } => keyring::rotate(&keys, now)
            .map(|ring| {
                format!(
                    "added key {} to {}; it mints from now on, {} key(s) verify\n",
                    ring.newest().id(),
                    keys.display(),
                    ring.keys().len()
                )
            })
            .map_err(|e| e.to_string()),
        AuthCommand::Mint {
            keys,
            tenant,
            caveats,
        } => KeyRing::load(&keys)
            .map_err(|e| e.to_string())
            .and_then(|ring| {
                auth::mint(ring.newest(), &tenant, &caveats.caveats(now)).map_err(|e| e.to_string())
            })
            .map(|t| t + "\n"),
        AuthCommand::Attenuate { token, caveats } => {
            if caveats.is_empty() {
                eprintln!(
                    "micronode: auth attenuate: give at least one of --bucket, --prefix, \
                     --ops, --ttl"
                );
                return ExitCode::from(2);
            }
            read_token(&token).and_then(|t| {
                auth::attenuate(&t, &caveats.caveats(now))
                    .map(|t| t + "\n")
                    .map_err(|e| e.to_string())
            })
        }
        AuthCommand::Revoke {
            victim,
            nonce,
            client,
        } => return revoke(&victim, nonce, &client).unwrap_or_else(Failure::report),
        AuthCommand::Inspect { token } => read_token(&token).and_then(|t| {
            let inspection = auth::inspect(&t).map_err(|e| e.to_string())?;
            serde_json::to_string(&inspection)
                .map(|j| j + "\n")
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(text) => out::print(text),
        Err(e) => {
            eprintln!("micronode: auth: {e}");
            ExitCode::from(1)
        }
    }
}

/// `auth revoke`: one POST, the server's answer printed.
fn revoke(victim: &str, nonce: bool, client: &ClientArgs) -> Result<ExitCode, Failure> {
    let victim = read_token(victim).map_err(Failure::new)?;
    let body = if nonce {
        serde_json::json!({ "nonce": victim })
    } else {
        serde_json::json!({ "token": victim })
    };
    let client = Client::new(client)?;
    let call = Call::new(Method::POST, "/v1/auth/revoke".to_owned()).json(body.to_string());
    let answer = client.block_on(client.send(call))?;
    let mut text = answer.body.to_vec();
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    Ok(out::print(text))
}

/// The token argument, or stdin for `-` (surrounding whitespace trimmed; reading stops just
/// past the longest valid token).
fn read_token(arg: &str) -> Result<String, String> {
    if arg != "-" {
        return Ok(arg.trim().to_owned());
    }
    let mut text = String::new();
    std::io::stdin()
        .take(token::MAX_TOKEN_BYTES as u64 + 64)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the token from stdin: {e}"))?;
    Ok(text.trim().to_owned())
}
