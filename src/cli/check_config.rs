//! `micronode check-config [--config FILE]` (also `micronode --check-config`): load and
//! validate the configuration exactly as `serve` would, print the effective configuration as
//! TOML (it can be fed back with `--config`), exit 0; or exit 2 naming the bad key.

use std::process::ExitCode;

use super::{ConfigArgs, load_config, out};

pub(crate) fn run(args: ConfigArgs) -> ExitCode {
    match load_config(&args) {
        Ok(cfg) => out::print(cfg.to_toml()),
        Err(code) => code,
    }
}
