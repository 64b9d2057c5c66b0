//! The argument value types and value parsers: `KEY=VALUE` pairs, durations and times (checked
//! while clap parses, so a malformed one is a usage error, exit 2, reported before anything
//! runs), and the token's user type.
//!
//! Like its parent module, this only parses arguments; it must not touch files or the network.

use std::str::FromStr;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserType {
    /// Staff of the tenant (MSP users).
    Internal,
    /// Client-portal users.
    Client,
}

impl UserType {
    pub fn as_str(self) -> &'static str {
        match self {
            UserType::Internal => "internal",
            UserType::Client => "client",
        }
    }
}

/// A `KEY=VALUE` argument: split at the first `=`; the key must be non-empty, the value may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl FromStr for KeyValue {
    type Err = String;

    fn from_str(s: &str) -> Result<KeyValue, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KeyValue {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            Some(_) => Err(format!("`{s}` has an empty key; expected KEY=VALUE")),
            None => Err(format!("`{s}` is not KEY=VALUE")),
        }
    }
}

/// One step of a rollout's schedule: each canary's percentage (`10`, `2.5`, `5+5` for two
/// canaries) and optionally its own hold (`10@30s`).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStepArg {
    /// In buckets of 10,000 (a percentage times 100).
    pub weights: Vec<u32>,
    pub hold: Option<std::time::Duration>,
}

impl FromStr for RolloutStepArg {
    type Err = String;

    fn from_str(s: &str) -> Result<RolloutStepArg, String> {
        let (weights, hold) = match s.split_once('@') {
            Some((w, h)) => (w, Some(parse_duration(h)?)),
            None => (s, None),
        };
        let weights = weights
            .split('+')
            .map(|p| {
                let pct: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{p}` in `{s}` is not a percentage"))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(format!("`{p}` in `{s}` is not 0 to 100"));
                }
                Ok((pct * 100.0).round() as u32)
            })
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(RolloutStepArg { weights, hold })
    }
}

/// `90`, `90s`, `15m`, `1h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90s, 15m, 1h or 7d"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use s, m, h or d")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|&secs| secs > 0)
        .ok_or_else(|| format!("`{s}` must be more than zero and less than centuries"))?;
    Ok(std::time::Duration::from_secs(secs))
}

/// RFC 3339 (`2027-01-31T00:00:00Z`) or a date (`2027-01-31`, midnight UTC).
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is neither RFC 3339 (2027-01-31T00:00:00Z) nor YYYY-MM-DD"))
}
