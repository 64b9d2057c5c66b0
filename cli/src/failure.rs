//! How a failed command ends: exactly one line on stderr and a non-zero exit status.
//!
//! Exit status 2 means the command line was wrong (clap's errors and [`Usage`]); 1 means
//! everything else. A control-plane error is printed as `error: <CODE>: <message>` with the
//! stable code from the error table (`SIGNATURE_INVALID`, `EXTENSION_NOT_FOUND`, …), so scripts
//! can match it. This module must never print `Debug` output or a backtrace, also for panics.

use std::process::ExitCode;

use annex_proto::AnnexError;

/// Exit status for a wrong command line.
const USAGE: u8 = 2;
/// Exit status for every other failure.
const FAILURE: u8 = 1;

/// A command-line mistake found after parsing (a missing `--tenant`, conflicting options).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A usage error as an `anyhow::Error`.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// Prints the one error line for `err` and returns its exit status.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let (line, status) = render(err);
    eprintln!("{line}");
    ExitCode::from(status)
}

/// The error line and exit status for a failure.
///
/// A control-plane error anywhere in the chain gives `error: CODE: message`, followed by the
/// outermost context in parentheses when there is one (`(publishing bundle.tar.zst)`). Any
/// other error prints its whole context chain joined by `: `.
pub fn render(err: &anyhow::Error) -> (String, u8) {
    let status = if err.downcast_ref::<Usage>().is_some() {
        USAGE
    } else {
        FAILURE
    };
    let remote = err.chain().find_map(|e| e.downcast_ref::<AnnexError>());
    let text = match remote {
        Some(remote) => {
            let mut text = format!("{}: {}", remote.code, remote.message);
            let outer = err.to_string();
            if outer != remote.to_string() {
                text.push_str(&format!(" ({outer})"));
            }
            text
        }
        None => format!("{err:#}"),
    };
    (format!("error: {}", one_line(&text)), status)
}

/// Clap's own errors: help and version print as clap formats them (exit 0, or 2 when help is
/// shown because a subcommand is missing); everything else becomes one line, exit 2.
pub fn clap_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(if err.use_stderr() { USAGE } else { 0 })
        }
        _ => {
            eprintln!("{}", clap_line(&err.render().to_string()));
            ExitCode::from(USAGE)
        }
    }
}

/// Clap's multi-paragraph error as one line: the message, any `tip:`, and the usage.
fn clap_line(rendered: &str) -> String {
    let paragraphs: Vec<String> = rendered
        .split("\n\n")
        .map(one_line)
        .filter(|p| !p.is_empty())
        .collect();
    let mut line = paragraphs
        .first()
        .cloned()
        .unwrap_or_else(|| "error: invalid arguments".to_owned());
    for p in paragraphs.iter().skip(1) {
        if p.starts_with("tip:") {
            line.push_str("; ");
            line.push_str(p);
        }
    }
    match paragraphs.iter().find_map(|p| p.strip_prefix("Usage: ")) {
        Some(usage) => line.push_str(&format!(" (usage: {usage}; see --help)")),
        None => line.push_str(" (see --help)"),
    }
    line
}

/// Replaces a panic's default report (message, location and backtrace hint) with one line.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        eprintln!(
            "error: annex failed unexpectedly ({}); please report this",
            one_line(&message)
        );
        std::process::exit(i32::from(FAILURE));
    }));
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use annex_proto::ErrorCode;

    #[test]
    fn remote_errors_lead_with_their_code() {
        let err = anyhow::Error::new(AnnexError::new(
            ErrorCode::SignatureInvalid,
            "the signature does not verify",
        ))
        .context("publishing b.tar.zst");
        assert_eq!(
            render(&err),
            (
                "error: SIGNATURE_INVALID: the signature does not verify (publishing b.tar.zst)"
                    .to_owned(),
                1
            )
        );
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <EXTENSION>\n\nUsage: annex install <EXTENSION>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_line(rendered),
            "error: the following required arguments were not provided: <EXTENSION> (usage: annex install <EXTENSION>; see --help)"
        );
    }

    #[test]
    fn local_errors_print_their_chain_on_one_line() {
        let err = anyhow::anyhow!("line one\nline two").context("reading x");
        assert_eq!(
            render(&err),
            ("error: reading x: line one line two".to_owned(), 1)
        );
        assert_eq!(render(&usage("--tenant is required")).1, 2);
    }
}
