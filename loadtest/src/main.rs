//! `annex-loadtest`: the load and soak harness (filled by the load-harness issue).

fn main() {
    eprintln!("annex-loadtest: not built yet; see the load-harness issue");
    std::process::exit(2);
}
