//! `annex rollout`: gradual rollouts of the tenant's install to new versions.

use clap::{Args, Subcommand};

use super::values::{RolloutStepArg, parse_duration};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start serving canary versions beside the install's version, by weight and
    /// sticky per end user, stepping up on a schedule and rolling back automatically
    /// when a canary breaks its health budget.
    Start(RolloutStartArgs),
    /// Show the install's active (or newest) rollout: weights, step, health, history.
    Status {
        /// Extension slug, registry id or install id.
        #[arg(value_name = "EXTENSION")]
        extension: String,
    },
    /// Make a canary the install's version now (as an upgrade) and end the rollout.
    Promote {
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// The canary to promote [default: the only one, or the one with the most weight].
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
    },
    /// Send every call to the install's version again and end the rollout.
    Abort {
        #[arg(value_name = "EXTENSION")]
        extension: String,
        /// Why, for the rollout's history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// Extension slug, registry id or install id.
    #[arg(value_name = "EXTENSION")]
    pub extension: String,

    /// A canary version (repeat for up to three).
    #[arg(long = "to", value_name = "VERSION", required = true)]
    pub versions: Vec<String>,

    /// The schedule: the canary's percentage per step, comma-separated (`10,50,100`);
    /// with several canaries one percentage each joined by `+` (`5+5,25+25`); a step
    /// may name its own hold with `@` (`10@10m,100@1h`).
    #[arg(
        long,
        value_name = "STEPS",
        value_delimiter = ',',
        default_value = "10,50,100"
    )]
    pub steps: Vec<RolloutStepArg>,

    /// How long each step holds before the next (and the last before promotion).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub every: std::time::Duration,

    /// How many percentage points a canary's failure rate (5xx, trap, timeout, out of
    /// memory) may exceed the install's version's before it is rolled back.
    #[arg(long, value_name = "POINTS", default_value_t = 5.0)]
    pub max_error_rate: f64,

    /// How many milliseconds a canary's p99 latency may exceed the install's version's
    /// (0: latency is not judged).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub max_p99_ms: u64,

    /// Calls a canary must serve in a step before its budgets are judged.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub min_calls: u32,

    /// At promotion, disable schedules whose endpoint the new version lacks instead of
    /// refusing (checked at start).
    #[arg(long)]
    pub disable_missing_schedules: bool,
}
