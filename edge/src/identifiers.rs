//! What the edge accepts as a tenant id and as an extension name before it
//! looks either up anywhere (the install cache, the control plane, a log
//! line). A string outside these rules can name nothing: refusing it early
//! keeps unauthenticated callers from filling caches with arbitrary keys and
//! keeps control characters out of every later step. It must not decide
//! whether a valid name exists (the control plane does).

use annex_proto::domain::TenantId;

/// Longest extension name accepted, in bytes: a UUID is 36, and a slug
/// (`publisher.name`, lower case) of any published bundle is far shorter.
pub(crate) const MAX_EXTENSION: usize = 256;

/// `tenant` exactly as the control plane stores tenant ids (1–128 printable
/// ASCII characters, no spaces or slashes), with nothing trimmed: a value
/// that would only match after trimming names no tenant.
pub(crate) fn is_tenant(tenant: &str) -> bool {
    TenantId::parse(tenant).is_ok_and(|t| t.as_str() == tenant)
}

/// An extension named by install id, registry id or slug: 1–256 bytes, no
/// control characters, no slashes and no surrounding whitespace (publishers
/// and names may hold inner spaces).
pub(crate) fn is_extension(extension: &str) -> bool {
    !extension.is_empty()
        && extension.len() <= MAX_EXTENSION
        && extension.trim() == extension
        && !extension
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
}

/// Longest request id accepted from a client; longer ones are replaced.
pub(crate) const MAX_REQUEST_ID: usize = 128;

/// A request id as the edge keeps a client's: 1–128 visible ASCII
/// characters.
pub(crate) fn is_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_must_be_exact_ids() {
        for ok in [
            "tenant-a",
            "0f9e6b8c-3d7a-4c11-9a57-1c2d3e4f5a6b",
            "acme_co.1",
        ] {
            assert!(is_tenant(ok), "{ok}");
        }
        let long = "t".repeat(129);
        for bad in [
            "",
            " tenant-a",
            "tenant-a ",
            "a b",
            "a/b",
            "a\\b",
            "a\0b",
            "tênant",
            &long,
        ] {
            assert!(!is_tenant(bad), "{bad:?}");
        }
    }

    #[test]
    fn extension_names_are_bounded_and_printable() {
        for ok in [
            "acme.hello",
            "annex e2e.com.annex.e2e.hello",
            "0f9e6b8c-3d7a-4c11-9a57-1c2d3e4f5a6b",
        ] {
            assert!(is_extension(ok), "{ok}");
        }
        let long = "e".repeat(MAX_EXTENSION + 1);
        for bad in ["", " acme.hello", "a/b", "a\\b", "a\0b", "a\nb", &long] {
            assert!(!is_extension(bad), "{bad:?}");
        }
    }
}
