//! Bearer-token authentication shared by both APIs: `Authorization: Bearer <token>`
//! (HTTP header or gRPC metadata). Tokens are compared in constant time, and every
//! configured token is compared, so timing reveals neither which token matched nor how
//! much of one did. With no tokens configured, authentication is off.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use crate::Error;

/// The accepted tokens.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    tokens: Arc<[Box<[u8]>]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth(<{} tokens redacted>)", self.tokens.len())
    }
}

impl Auth {
    /// Accepts any of `tokens`; none means authentication is off.
    pub(crate) fn new(tokens: &[String]) -> Self {
        Auth {
            tokens: tokens.iter().map(|t| t.as_bytes().into()).collect(),
        }
    }

    /// Whether requests must carry a token.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the value of an `authorization` header (`None` when absent).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when auth is on and the header is missing, malformed
    /// or carries a token that is not accepted.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        let header = authorization.ok_or(Error::Unauthenticated(
            "missing bearer token (authorization: Bearer <token>)",
        ))?;
        let token = bearer_token(header).ok_or(Error::Unauthenticated(
            "malformed authorization header, expected \"Bearer <token>\"",
        ))?;
        let mut matched = subtle::Choice::from(0);
        for accepted in self.tokens.iter() {
            matched |= accepted.as_ref().ct_eq(token);
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Error::Unauthenticated("invalid bearer token"))
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, surrounding spaces ignored).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first().is_some_and(u8::is_ascii_whitespace)
    {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&["alpha".into(), "beta-token".into()])
    }

    #[test]
    fn accepts_any_configured_token() {
        assert!(auth().check(Some(b"Bearer alpha")).is_ok());
        assert!(auth().check(Some(b"bearer  beta-token ")).is_ok());
    }

    #[test]
    fn rejects_missing_malformed_and_wrong_tokens() {
        let missing = auth().check(None).unwrap_err();
        assert!(
            missing.to_string().contains("missing bearer token"),
            "{missing}"
        );
        let malformed = auth().check(Some(b"Basic YWxwaGE=")).unwrap_err();
        assert!(malformed.to_string().contains("malformed"), "{malformed}");
        assert!(auth().check(Some(b"Bearer")).is_err());
        assert!(auth().check(Some(b"Beareralpha")).is_err());
        let wrong = auth().check(Some(b"Bearer alph")).unwrap_err();
        assert_eq!(wrong.to_string(), "invalid bearer token");
        assert!(auth().check(Some(b"Bearer alphaa")).is_err());
    }

    #[test]
    fn no_tokens_means_auth_is_off() {
        let off = Auth::new(&[]);
        assert!(!off.is_enabled());
        assert!(off.check(None).is_ok());
    }
}
