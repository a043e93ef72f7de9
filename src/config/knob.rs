//! The knob machinery: the [`Knob`] row type, how a value is read from the environment and
//! shown, and the `knobs!` macro that turns the one declaration in `config/mod.rs` into the
//! section structs, their `Default`s and the [`KNOBS`](super::KNOBS) table.

use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize};

use super::Config;

/// One configuration knob: a row of [`KNOBS`](super::KNOBS). Everything about a knob — its
/// field, default, TOML key, environment variable, allowed values and doc line — comes from its
/// single entry in the `knobs!` declaration; env parsing, validation, `--help` and the table in
/// docs/CONFIG.md are all derived from these rows.
pub struct Knob {
    /// TOML key, `section.field` (also the field path: `cfg.section.field`).
    pub key: &'static str,
    /// Environment variable that sets it.
    pub env: &'static str,
    /// Other variable names also read; `env` wins when both are set.
    pub aliases: &'static [&'static str],
    /// The one-line summary (the first doc line).
    pub summary: &'static str,
    /// The whole doc text (all doc lines joined).
    pub doc: &'static str,
    /// `section.field (ENV)`: how errors name the knob.
    pub(crate) label: &'static str,
    pub(crate) get: fn(&Config) -> String,
    pub(crate) set: fn(&mut Config, &str) -> Result<(), String>,
    pub(crate) check: fn(&Config) -> Result<(), String>,
    pub(crate) allowed: fn() -> Option<String>,
}

impl Knob {
    /// The built-in default, rendered as it would be written in the environment.
    pub fn default_text(&self) -> String {
        (self.get)(&Config::default())
    }

    /// This knob's value in `cfg`, rendered as it would be written in the environment.
    pub fn value_text(&self, cfg: &Config) -> String {
        (self.get)(cfg)
    }

    /// Allowed values (`1–86400000`, `sled, mem`, …), when the type or a range limits them.
    pub fn allowed(&self) -> Option<String> {
        (self.allowed)()
    }
}

impl std::fmt::Debug for Knob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knob")
            .field("key", &self.key)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// A type a knob can have: parsed from one environment string, rendered back the same way.
pub(crate) trait KnobValue: Sized {
    fn parse_env(raw: &str) -> Result<Self, String>;
    fn render(&self) -> String;
    /// The values the type itself allows, when it is a closed set.
    fn allowed() -> Option<String> {
        None
    }
}

macro_rules! knob_value_via_from_str {
    ($($t:ty),*) => {$(
        impl KnobValue for $t {
            fn parse_env(raw: &str) -> Result<Self, String> {
                raw.trim().parse::<$t>().map_err(|e| format!("invalid value {raw:?}: {e}"))
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
knob_value_via_from_str!(u32, u64, usize);

/// The accepted spellings of a boolean, stated once for parsing, errors and docs.
pub(crate) const BOOL_WORDS: &str = "0/1, true/false, yes/no, on/off (any case)";

impl KnobValue for bool {
    fn parse_env(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(format!("invalid value {raw:?}: expected {BOOL_WORDS}")),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
    fn allowed() -> Option<String> {
        Some(BOOL_WORDS.to_owned())
    }
}

impl KnobValue for String {
    fn parse_env(raw: &str) -> Result<Self, String> {
        Ok(raw.to_owned())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

/// Paths are taken as given; whether one is required is the knob's own check.
impl KnobValue for PathBuf {
    fn parse_env(raw: &str) -> Result<Self, String> {
        Ok(PathBuf::from(raw))
    }
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl KnobValue for SocketAddr {
    fn parse_env(raw: &str) -> Result<Self, String> {
        resolve_socket_addr(raw)
    }
    fn render(&self) -> String {
        self.to_string()
    }
    fn allowed() -> Option<String> {
        Some("IP:port or host:port (resolved at boot)".to_owned())
    }
}

/// An enum knob whose values are its serde names (`rename_all = "lowercase"`).
pub(crate) trait KnobEnum: Serialize + DeserializeOwned + 'static {
    /// Every variant, in the order docs list them.
    const ALL: &'static [Self];
}

fn enum_from_str<T: DeserializeOwned>(raw: &str) -> Result<T, String> {
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        raw.trim().into_deserializer();
    T::deserialize(de).map_err(|e| format!("invalid value {raw:?}: {e}"))
}

fn enum_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn enum_names<T: KnobEnum>() -> String {
    let names: Vec<String> = T::ALL.iter().map(enum_name).collect();
    format!("one of: {}", names.join(", "))
}

impl<T: KnobEnum> KnobValue for T {
    fn parse_env(raw: &str) -> Result<Self, String> {
        enum_from_str(raw)
    }
    fn render(&self) -> String {
        enum_name(self)
    }
    fn allowed() -> Option<String> {
        Some(enum_names::<T>())
    }
}

/// An optional enum: unset renders as an empty string (docs show "unset").
impl<T: KnobEnum> KnobValue for Option<T> {
    fn parse_env(raw: &str) -> Result<Self, String> {
        enum_from_str(raw).map(Some)
    }
    fn render(&self) -> String {
        self.as_ref().map(enum_name).unwrap_or_default()
    }
    fn allowed() -> Option<String> {
        Some(enum_names::<T>())
    }
}

/// `v` must lie in `range`.
pub(crate) fn check_range<T: PartialOrd + Display>(
    v: &T,
    range: RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(v) {
        return Ok(());
    }
    Err(format!(
        "{v} is out of range {}..={}",
        range.start(),
        range.end()
    ))
}

/// `lo–hi`, for docs and `--help`.
pub(crate) fn range_text<T: Display>(range: RangeInclusive<T>) -> String {
    format!("{}–{}", range.start(), range.end())
}

/// `IP:port`, or `host:port` resolved now (the first address the resolver gives).
pub(crate) fn resolve_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    let text = raw.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("invalid value {raw:?}: expected host:port"));
    };
    let port: u16 = port
        .parse()
        .map_err(|e| format!("invalid value {raw:?}: port {port:?}: {e}"))?;
    if !is_host_name(host) {
        return Err(format!(
            "invalid value {raw:?}: {host:?} is neither an IP address nor a host name"
        ));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("host {host:?} does not resolve: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("host {host:?} resolves to no address"))
}

/// A DNS name: dot-separated labels of ASCII letters, digits and `-`, at most 253 bytes. Checked
/// before asking the resolver, so junk never turns into a lookup.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// serde `deserialize_with` for the bind address: the TOML file may name a host too.
pub(crate) fn deserialize_socket_addr<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(de)?;
    resolve_socket_addr(&text).map_err(serde::de::Error::custom)
}

/// Declares every knob once and derives the section structs, their `Default`s, [`Config`] and
/// the `KNOBS` table. Grammar, per section and per knob:
///
/// ```text
/// /// Section doc.
/// [toml_section] SectionStruct {
///     /// One-line summary (shown by --help).
///     /// More doc (joined into the docs/CONFIG.md row).
///     field: Type = default_expr, env "MICRONODE_X" | "ALIAS",
///         range LO..=HI, check fn(&Config, &Type) -> Result<(), String>, serde(attrs);
/// }
/// ```
///
/// `range`, `check` and `serde` are optional and come in that order. `[section in parent]`
/// declares a section written as `[parent.section]` in TOML (the file loader moves it; see
/// `Config::from_toml`).
macro_rules! knobs {
    // Each section's header is first normalized to `[section (parent)]` or `[section ()]`, so
    // the parent is one token tree the per-field expansion can carry.
    (@norm [$($done:tt)*]) => {
        knobs!(@emit $($done)*);
    };
    (@norm [$($done:tt)*]
        $(#[doc = $sdoc:literal])* [$section:ident in $parent:ident] $Sec:ident { $($body:tt)* }
        $($rest:tt)*
    ) => {
        knobs!(@norm [$($done)* $(#[doc = $sdoc])* [$section ($parent)] $Sec { $($body)* }] $($rest)*);
    };
    (@norm [$($done:tt)*]
        $(#[doc = $sdoc:literal])* [$section:ident] $Sec:ident { $($body:tt)* }
        $($rest:tt)*
    ) => {
        knobs!(@norm [$($done)* $(#[doc = $sdoc])* [$section ()] $Sec { $($body)* }] $($rest)*);
    };
    (@emit
        $(
            $(#[doc = $sdoc:literal])*
            [$section:ident $parent:tt] $Sec:ident {
                $(
                    #[doc = $summary:literal]
                    $(#[doc = $more:literal])*
                    $field:ident : $ty:ty = $default:expr,
                    env $env:literal $(| $alias:literal)*
                    $(, range $range:expr)?
                    $(, check $check:expr)?
                    $(, serde($($serde:tt)*))?
                    ;
                )*
            }
        )*
    ) => {
        $(
            $(#[doc = $sdoc])*
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
            #[serde(deny_unknown_fields, default)]
            pub struct $Sec {
                $(
                    #[doc = $summary]
                    $(#[doc = $more])*
                    #[doc = concat!("\n\nTOML `", $crate::config::knob::knob_key!($parent $section $field), "`, env `", $env, "`.")]
                    $(#[serde($($serde)*)])?
                    pub $field: $ty,
                )*
            }

            impl Default for $Sec {
                fn default() -> Self {
                    Self {
                        $($field: $default,)*
                    }
                }
            }
        )*

        /// The effective configuration of one server: one field per TOML section.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $(pub $section: $Sec,)*
            /// Per-tenant limits, `[tenants.<id>]` (TOML only; docs/CONFIG.md, "Tenants").
            #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            pub tenants: std::collections::BTreeMap<String, TenantCfg>,
        }

        /// Every knob, in declaration order (the order of docs/CONFIG.md and `--help`).
        pub static KNOBS: &[Knob] = &[
            $($(
                Knob {
                    key: $crate::config::knob::knob_key!($parent $section $field),
                    env: $env,
                    aliases: &[$($alias),*],
                    summary: $summary,
                    doc: concat!($summary $(, $more)*),
                    label: concat!($crate::config::knob::knob_key!($parent $section $field), " (", $env, ")"),
                    get: |c| KnobValue::render(&c.$section.$field),
                    set: |c, raw| {
                        c.$section.$field = KnobValue::parse_env(raw)?;
                        Ok(())
                    },
                    check: |_c| {
                        $(knob::check_range(&_c.$section.$field, $range)?;)?
                        $(
                            let check: fn(&Config, &$ty) -> Result<(), String> = $check;
                            check(_c, &_c.$section.$field)?;
                        )?
                        Ok(())
                    },
                    allowed: || {
                        let ranges: &[String] = &[$(knob::range_text::<$ty>($range))?];
                        ranges.first().cloned().or_else(<$ty as KnobValue>::allowed)
                    },
                },
            )*)*
        ];
    };
    ($($all:tt)*) => {
        knobs!(@norm [] $($all)*);
    };
}
pub(crate) use knobs;

/// A knob's TOML key: `section.field`, or `parent.section.field`.
macro_rules! knob_key {
    (() $section:ident $field:ident) => {
        concat!(stringify!($section), ".", stringify!($field))
    };
    (($parent:ident) $section:ident $field:ident) => {
        concat!(
            stringify!($parent),
            ".",
            stringify!($section),
            ".",
            stringify!($field)
        )
    };
}
pub(crate) use knob_key;
