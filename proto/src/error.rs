//! The error-code table: every error Annex reports to a client has one stable
//! [`ErrorCode`], and this table alone decides its gRPC code and HTTP status.
//!
//! On gRPC the code travels in the `annex-error-code` response metadata beside
//! the status; the status message is written for the user and never carries
//! internal detail (that goes to the log with the request id).

use std::fmt;

/// Response metadata key carrying the stable error code.
pub(crate) const ERROR_CODE_METADATA: &str = "annex-error-code";

/// Response metadata key carrying when to retry a refusal, in whole
/// seconds (the edge turns it into `Retry-After`).
const RETRY_AFTER_METADATA: &str = "annex-retry-after";

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($name:literal, $grpc:ident, $http:literal), )*) => {
        /// A stable, documented error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name, e.g. `EXTENSION_VERSION_ALREADY_EXISTS`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The gRPC status code.
            pub(crate) fn grpc_code(self) -> tonic::Code {
                match self { $(ErrorCode::$variant => tonic::Code::$grpc,)* }
            }

            /// The HTTP status.
            pub fn http_status(self) -> http::StatusCode {
                let status = match self { $(ErrorCode::$variant => $http,)* };
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR)
            }

            /// Parses a wire name.
            pub fn parse(name: &str) -> Option<ErrorCode> {
                match name { $($name => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// A request field is missing or malformed.
    InvalidArgument => ("INVALID_ARGUMENT", InvalidArgument, 400),
    /// The manifest inside a bundle failed validation.
    InvalidManifest => ("INVALID_MANIFEST", InvalidArgument, 400),
    /// The manifest is missing from the bundle.
    ManifestNotFound => ("MANIFEST_NOT_FOUND", InvalidArgument, 400),
    /// The bundle archive is malformed or contains a forbidden entry.
    InvalidBundle => ("INVALID_BUNDLE", InvalidArgument, 400),
    /// The bundle exceeds a size, file-count or decompression cap.
    BundleTooLarge => ("BUNDLE_TOO_LARGE", ResourceExhausted, 413),
    /// The bytes do not match the declared content hash or size.
    HashMismatch => ("HASH_MISMATCH", InvalidArgument, 400),
    /// No signature was supplied.
    SignatureMissing => ("SIGNATURE_MISSING", FailedPrecondition, 400),
    /// The signature does not verify under any trusted key of the publisher.
    SignatureInvalid => ("SIGNATURE_INVALID", FailedPrecondition, 400),
    /// The only keys that verify are revoked.
    KeyRevoked => ("KEY_REVOKED", FailedPrecondition, 400),
    /// The only keys that verify are outside their validity window.
    KeyExpired => ("KEY_EXPIRED", FailedPrecondition, 400),
    /// The publisher has no trusted key.
    UntrustedPublisher => ("UNTRUSTED_PUBLISHER", FailedPrecondition, 400),
    /// A publisher key with this id already exists.
    KeyAlreadyExists => ("KEY_ALREADY_EXISTS", AlreadyExists, 409),
    /// No such publisher key.
    KeyNotFound => ("KEY_NOT_FOUND", NotFound, 404),
    /// Versions are immutable: this (extension, version) exists.
    ExtensionVersionAlreadyExists => ("EXTENSION_VERSION_ALREADY_EXISTS", AlreadyExists, 409),
    /// No such extension.
    ExtensionNotFound => ("EXTENSION_NOT_FOUND", NotFound, 404),
    /// No such version.
    VersionNotFound => ("VERSION_NOT_FOUND", NotFound, 404),
    /// No bundle with this content hash.
    BundleNotFound => ("BUNDLE_NOT_FOUND", NotFound, 404),
    /// The tenant has no (active) install of this extension.
    InstallNotFound => ("INSTALL_NOT_FOUND", NotFound, 404),
    /// The version is deprecated and cannot be newly installed.
    VersionDeprecated => ("VERSION_DEPRECATED", FailedPrecondition, 409),
    /// Upgrading would orphan schedules whose endpoints are gone.
    ScheduleRemapFailed => ("SCHEDULE_REMAP_FAILED", FailedPrecondition, 409),
    /// Storage compare-and-swap failed.
    RevisionMismatch => ("REVISION_MISMATCH", Aborted, 409),
    /// The install already has an active rollout.
    RolloutActive => ("ROLLOUT_ACTIVE", AlreadyExists, 409),
    /// The install has no (active) rollout.
    RolloutNotFound => ("ROLLOUT_NOT_FOUND", NotFound, 404),
    /// A storage or scheduler limit was exceeded.
    LimitExceeded => ("LIMIT_EXCEEDED", InvalidArgument, 400),
    /// A quota was exceeded.
    QuotaExceeded => ("QUOTA_EXCEEDED", ResourceExhausted, 429),
    /// Too many requests; retry later.
    RateLimited => ("RATE_LIMITED", ResourceExhausted, 429),
    /// The request body or upload is too large.
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", ResourceExhausted, 413),
    /// No client certificate or credentials.
    Unauthenticated => ("UNAUTHENTICATED", Unauthenticated, 401),
    /// The caller's role may not call this.
    PermissionDenied => ("PERMISSION_DENIED", PermissionDenied, 403),
    /// The execution grant is missing, expired or for another install.
    GrantInvalid => ("GRANT_INVALID", PermissionDenied, 403),
    /// Not found (generic).
    NotFound => ("NOT_FOUND", NotFound, 404),
    /// A dependency is unavailable (Postgres, a worker); safe to retry.
    Unavailable => ("UNAVAILABLE", Unavailable, 503),
    /// The worker is still compiling the extension's component; nothing ran.
    /// Retry after the interval the answer names (`Retry-After` at the edge).
    ComponentCompiling => ("COMPONENT_COMPILING", Unavailable, 503),
    /// An idempotency key was used before with a different request; nothing
    /// ran (docs/design/idempotency.md).
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", FailedPrecondition, 422),
    /// A call with this idempotency key is still running; nothing ran for
    /// this one. Retry after the interval the answer names.
    IdempotencyInProgress => ("IDEMPOTENCY_IN_PROGRESS", Aborted, 409),
    /// The call with this idempotency key ran, but its answer was too large
    /// to keep for replay; it is not run again.
    IdempotencyResponseNotKept => ("IDEMPOTENCY_RESPONSE_NOT_KEPT", FailedPrecondition, 409),
    /// The idempotency records cannot be reached, so a call with a key is
    /// not run (it could run twice); retry after the interval the answer names.
    IdempotencyUnavailable => ("IDEMPOTENCY_UNAVAILABLE", Unavailable, 503),
    /// The deadline passed.
    Timeout => ("TIMEOUT", DeadlineExceeded, 504),
    /// An internal failure; details are in the server log.
    Internal => ("INTERNAL", Internal, 500),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as a client sees it: a stable code and a message fit for users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code})")]
pub struct AnnexError {
    pub code: ErrorCode,
    pub message: String,
}

impl AnnexError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// Reads the code back from a status produced by [`From<AnnexError>`];
    /// a status without one maps from its gRPC code.
    pub fn from_status(status: &tonic::Status) -> Self {
        let code = status
            .metadata()
            .get(ERROR_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
            .unwrap_or(match status.code() {
                tonic::Code::InvalidArgument => ErrorCode::InvalidArgument,
                tonic::Code::NotFound => ErrorCode::NotFound,
                tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
                tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
                tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
                tonic::Code::DeadlineExceeded => ErrorCode::Timeout,
                tonic::Code::Unavailable => ErrorCode::Unavailable,
                _ => ErrorCode::Internal,
            });
        Self::new(code, status.message())
    }
}

impl From<AnnexError> for tonic::Status {
    fn from(err: AnnexError) -> Self {
        let mut status = tonic::Status::new(err.code.grpc_code(), err.message);
        status.metadata_mut().insert(
            ERROR_CODE_METADATA,
            tonic::metadata::MetadataValue::from_static(err.code.as_str()),
        );
        status
    }
}

/// Adds when to retry (whole seconds, at least 1) to a refusal.
pub fn set_retry_after(status: &mut tonic::Status, after: std::time::Duration) {
    let secs = after.as_secs().max(1);
    status.metadata_mut().insert(
        RETRY_AFTER_METADATA,
        tonic::metadata::MetadataValue::from(secs),
    );
}

/// When a refusal says to retry, if it says so.
pub fn retry_after(status: &tonic::Status) -> Option<std::time::Duration> {
    status
        .metadata()
        .get(RETRY_AFTER_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}

/// The worker's refusal of a call for its idempotency key (reused with
/// another request, still running elsewhere, its answer not kept, or the
/// records unreachable): nothing ran, and another worker would answer the
/// same, so callers hand it to their client instead of retrying it
/// elsewhere.
pub fn idempotency_refusal(status: &tonic::Status) -> Option<ErrorCode> {
    status
        .metadata()
        .get(ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse)
        .filter(|code| {
            matches!(
                code,
                ErrorCode::IdempotencyKeyReused
                    | ErrorCode::IdempotencyInProgress
                    | ErrorCode::IdempotencyResponseNotKept
                    | ErrorCode::IdempotencyUnavailable
            )
        })
}

/// Whether a failed call to a worker certainly never started a guest, so
/// it may be sent to another worker (ARCHITECTURE.md, "Invariants"): the
/// server refused it itself (`UNAVAILABLE` or `RESOURCE_EXHAUSTED` with an Annex
/// error code: draining, overloaded), the connection could not be made
/// (refused, TLS handshake), or HTTP/2 refused the stream (`REFUSED_STREAM`,
/// e.g. after the server's GOAWAY). A connection that broke while the call
/// was under way is not among them: the guest may have run.
pub fn never_started(status: &tonic::Status) -> bool {
    if !matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted
    ) {
        return false;
    }
    if status.metadata().contains_key(ERROR_CODE_METADATA) {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        // tonic's and hyper's connect errors and h2's refused stream are
        // not public types; their names are stable in `Debug`.
        let debug = format!("{e:?}");
        if debug.starts_with("ConnectError") || debug.contains("REFUSED_STREAM") {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_count_as_never_started() {
        let refused = tonic::Status::from(AnnexError::new(ErrorCode::Unavailable, "draining"));
        assert!(never_started(&refused));
        // An UNAVAILABLE without Annex's code and without a connect error in
        // its source: a connection that broke mid-call.
        assert!(!never_started(&tonic::Status::unavailable(
            "connection reset"
        )));
        assert!(!never_started(&tonic::Status::unknown("h2 protocol error")));
    }

    #[test]
    fn a_compiling_refusal_never_started_and_says_when_to_retry() {
        let mut status =
            tonic::Status::from(AnnexError::new(ErrorCode::ComponentCompiling, "compiling"));
        assert_eq!(retry_after(&status), None);
        set_retry_after(&mut status, std::time::Duration::from_millis(2_500));
        assert!(never_started(&status));
        assert_eq!(
            retry_after(&status),
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(
            AnnexError::from_status(&status).code,
            ErrorCode::ComponentCompiling
        );
        assert_eq!(ErrorCode::ComponentCompiling.http_status().as_u16(), 503);
    }

    #[test]
    fn idempotency_refusals_are_told_apart_from_other_refusals() {
        for (code, http) in [
            (ErrorCode::IdempotencyKeyReused, 422),
            (ErrorCode::IdempotencyInProgress, 409),
            (ErrorCode::IdempotencyResponseNotKept, 409),
            (ErrorCode::IdempotencyUnavailable, 503),
        ] {
            let status = tonic::Status::from(AnnexError::new(code, "m"));
            assert_eq!(idempotency_refusal(&status), Some(code));
            assert_eq!(code.http_status().as_u16(), http);
        }
        let draining = tonic::Status::from(AnnexError::new(ErrorCode::Unavailable, "draining"));
        assert_eq!(idempotency_refusal(&draining), None);
        assert_eq!(idempotency_refusal(&tonic::Status::aborted("x")), None);
    }

    #[test]
    fn every_code_round_trips_through_a_status() {
        for &code in ErrorCode::ALL {
            let status = tonic::Status::from(AnnexError::new(code, "m"));
            assert_eq!(status.code(), code.grpc_code());
            assert_eq!(AnnexError::from_status(&status).code, code);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn duplicate_version_is_already_exists_and_409() {
        let code = ErrorCode::ExtensionVersionAlreadyExists;
        assert_eq!(code.grpc_code(), tonic::Code::AlreadyExists);
        assert_eq!(code.http_status().as_u16(), 409);
        assert_eq!(code.as_str(), "EXTENSION_VERSION_ALREADY_EXISTS");
    }
}
