//! Whether a request path moves once a URL parser has read it: the one check
//! the control plane's and the runner API's ui-proxy relays both make before
//! joining a guest's route to the host application's base URL. Pure; it
//! must not build or send URLs.

/// A path encoded more deeply than this many rounds is refused outright.
const MAX_DECODING_ROUNDS: usize = 4;

/// Whether `path` has, once percent-decoded (repeatedly, at most
/// four rounds; deeper counts as moving), a `.` or `..`
/// segment, a backslash (a separator to WHATWG URL parsers) or a control
/// character: `%2e%2e` and `\` become path moves after URL parsing, so a
/// literal check alone is not enough.
pub fn moves(path: &str) -> bool {
    let mut decoded = path.as_bytes().to_vec();
    let mut rounds = 0;
    loop {
        let next = percent_decode(&decoded);
        if next == decoded {
            break;
        }
        rounds += 1;
        if rounds > MAX_DECODING_ROUNDS {
            return true;
        }
        decoded = next;
    }
    decoded.iter().any(|b| *b == b'\\' || b.is_ascii_control())
        || decoded
            .split(|b| *b == b'/')
            .any(|s| s == b"." || s == b"..")
}

/// `%XX` escapes replaced by their bytes; anything else kept.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::moves;

    #[test]
    fn encoded_and_backslash_moves_are_seen() {
        for path in [
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/%252e%252e/b",
            "/a\\b",
            "/a/%5c/b",
            "/a/%00",
            "/a/./b",
            "/%25252525252e",
        ] {
            assert!(moves(path), "{path}");
        }
        for path in ["/a/b", "/a/..b/c", "/a%20b", "/files/v1.2/x"] {
            assert!(!moves(path), "{path}");
        }
    }
}
