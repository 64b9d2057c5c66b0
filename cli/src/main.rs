//! The `annex` command (filled by the CLI issue).

fn main() {
    eprintln!("annex: not built yet; see the CLI issue");
    std::process::exit(2);
}
