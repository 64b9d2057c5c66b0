//! Session verification at request time: the configured keys plus, when a
//! JWKS URL is configured, the identity provider's cached key set, fetched
//! again (within its rate bound) when a token names a key it does not hold.

use std::sync::Arc;

use jsonwebtoken::Algorithm;

use super::jwks::JwksCache;
use super::jwt::{self, Claims, JwtError, JwtVerifier};

#[derive(Debug, Clone)]
pub(crate) struct SessionVerifier {
    config: Arc<JwtVerifier>,
    jwks: Option<Arc<JwksCache>>,
}

impl SessionVerifier {
    /// Starts the key-set fetcher when one is configured (inside a Tokio
    /// runtime).
    pub(crate) fn start(config: JwtVerifier) -> anyhow::Result<SessionVerifier> {
        let jwks = config.jwks.clone().map(JwksCache::start).transpose()?;
        Ok(SessionVerifier {
            config: Arc::new(config),
            jwks,
        })
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jwt::header(token)?;
        let cfg = &*self.config;
        let Some(jwks) = &self.jwks else {
            return jwt::verify_with(cfg, token, &header, cfg.keys.iter());
        };
        let set = jwks.keys();
        let first = jwt::verify_with(cfg, token, &header, cfg.keys.iter().chain(set.iter()));
        // A key the set may have gained since the last fetch: a new `kid`,
        // or an asymmetric algorithm the set holds no key for yet.
        let may_be_new = match &first {
            Err(JwtError::UnknownKey) => true,
            Err(JwtError::Algorithm) => header.alg != Algorithm::HS256,
            _ => false,
        };
        if !may_be_new {
            return first;
        }
        jwks.refresh().await;
        let now = jwks.keys();
        if Arc::ptr_eq(&set, &now) {
            return first;
        }
        jwt::verify_with(cfg, token, &header, cfg.keys.iter().chain(now.iter()))
    }
}
