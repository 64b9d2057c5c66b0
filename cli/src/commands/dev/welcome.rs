//! `annex dev`'s welcome lines: the edge, the control plane and the PKI
//! directory this run really uses, and the sample's commands only when a
//! sample is installed. Text only; it starts nothing and reads no files.

use std::path::Path;

use super::DEV_TENANT;

/// What the welcome lines show: the addresses and directories this run
/// really uses.
pub(super) struct Welcome<'a> {
    pub(super) edge_url: &'a str,
    pub(super) control_plane_url: &'a str,
    pub(super) pki: &'a Path,
    pub(super) env_file: &'a Path,
    /// The installed sample's slug; `None` under `--no-sample` (then no
    /// sample commands are shown).
    pub(super) sample: Option<&'a str>,
}

/// Prints the welcome lines on stderr.
pub(super) fn print(w: &Welcome<'_>) {
    eprintln!("{}", welcome_text(w));
}

fn welcome_text(w: &Welcome<'_>) -> String {
    let env = w.env_file.display();
    let mut text = format!(
        "\nAnnex is running.\n\
         \n  edge:          {edge}\
         \n  control plane: {cp} (mTLS; the annex CLI uses {pki})\
         \n  settings:      {env}\n",
        edge = w.edge_url,
        cp = w.control_plane_url,
        pki = w.pki.display(),
    );
    match w.sample {
        Some(sample) => text.push_str(&format!(
            "\nTry:\
             \n  set -a; . {env}; set +a\
             \n  curl -H \"Authorization: Bearer $ANNEX_TOKEN\" $ANNEX_EDGE_URL/api/ext/$ANNEX_SAMPLE/hello\
             \n  curl -H \"Authorization: Bearer $ANNEX_TOKEN\" -H 'content-type: application/json' -d '{{\"hi\":1}}' $ANNEX_EDGE_URL/api/ext/$ANNEX_SAMPLE/echo\
             \n  annex call {sample} /hello --tenant {DEV_TENANT}\n"
        )),
        None => text.push_str(&format!(
            "\nNo sample is installed (--no-sample). The CLI reads the settings with:\
             \n  set -a; . {env}; set +a\n"
        )),
    }
    text.push_str("\nCtrl-C stops everything.\n");
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn welcome(sample: Option<&str>) -> String {
        welcome_text(&Welcome {
            edge_url: "http://127.0.0.1:18080",
            control_plane_url: "https://127.0.0.1:17443",
            pki: Path::new("/tmp/state/pki"),
            env_file: Path::new("/tmp/state/dev.env"),
            sample,
        })
    }

    #[test]
    fn the_welcome_shows_the_real_ports_and_directories() {
        let text = welcome(Some("annex.hello"));
        assert!(
            text.contains("edge:          http://127.0.0.1:18080"),
            "{text}"
        );
        assert!(
            text.contains(
                "control plane: https://127.0.0.1:17443 (mTLS; the annex CLI uses /tmp/state/pki)"
            ),
            "{text}"
        );
        assert!(
            text.contains("annex call annex.hello /hello --tenant dev"),
            "{text}"
        );
    }

    #[test]
    fn without_the_sample_no_sample_commands_are_shown() {
        let text = welcome(None);
        assert!(text.contains("https://127.0.0.1:17443"), "{text}");
        assert!(!text.contains("annex call"), "{text}");
        assert!(!text.contains("curl"), "{text}");
        assert!(!text.contains("ANNEX_SAMPLE"), "{text}");
    }
}
