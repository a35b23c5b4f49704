//! Bearer-token authentication shared by both APIs: `Authorization: Bearer <token>`
//! (HTTP header or gRPC metadata). Tokens are compared in constant time, and every
//! configured token is compared, so timing reveals neither which token matched nor how
//! much of one did. Each token has scopes (`ingest`, `query`, `admin`; a plain token
//! has all three); a valid token without the scope a route needs gets `403` /
//! `PERMISSION_DENIED`. With no tokens configured, authentication is off.

use std::sync::Arc;

use datanexus_config::{Scope, TokenConfig};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::Error;

/// The scopes an authenticated request has (a bit per [`Scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Granted(u8);

impl Granted {
    /// Every scope (authentication off, or a plain token).
    pub(crate) const ALL: Granted = Granted(0b111);
    /// No scope.
    pub(crate) const NONE: Granted = Granted(0);

    fn bit(scope: Scope) -> u8 {
        match scope {
            Scope::Ingest => 1,
            Scope::Query => 2,
            Scope::Admin => 4,
        }
    }

    fn of(scopes: &[Scope]) -> Granted {
        Granted(scopes.iter().fold(0, |bits, s| bits | Granted::bit(*s)))
    }

    /// Whether `scope` is granted.
    pub(crate) fn allows(self, scope: Scope) -> bool {
        self.0 & Granted::bit(scope) != 0
    }

    /// [`Error::Forbidden`] unless `scope` is granted.
    ///
    /// # Errors
    /// The token lacks `scope`.
    pub(crate) fn require(self, scope: Scope) -> Result<(), Error> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "this token lacks the scope `{}`",
                scope.as_str()
            )))
        }
    }
}

/// The accepted tokens and their scopes.
#[derive(Clone, Default)]
pub(crate) struct Auth {
    tokens: Arc<[(Box<[u8]>, u8)]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth(<{} tokens redacted>)", self.tokens.len())
    }
}

impl Auth {
    /// Accepts any of `tokens`, each with its scopes; none means authentication is off.
    pub(crate) fn new(tokens: &[TokenConfig]) -> Self {
        Auth {
            tokens: tokens
                .iter()
                .map(|t| (t.token().as_bytes().into(), Granted::of(t.scopes()).0))
                .collect(),
        }
    }

    /// Whether requests must carry a token.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the value of an `authorization` header (`None` when absent) and returns
    /// what the token may do ([`Granted::ALL`] when authentication is off).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] when auth is on and the header is missing, malformed
    /// or carries a token that is not accepted.
    pub(crate) fn check(&self, authorization: Option<&[u8]>) -> Result<Granted, Error> {
        if !self.is_enabled() {
            return Ok(Granted::ALL);
        }
        let header = authorization.ok_or(Error::Unauthenticated(
            "missing bearer token (authorization: Bearer <token>)",
        ))?;
        let token = bearer_token(header).ok_or(Error::Unauthenticated(
            "malformed authorization header, expected \"Bearer <token>\"",
        ))?;
        // Every token is compared, and the scopes of the matching one are picked
        // without a branch: timing reveals neither which token matched nor its scopes.
        let mut matched = subtle::Choice::from(0);
        let mut granted = 0u8;
        for (accepted, scopes) in self.tokens.iter() {
            let eq = accepted.as_ref().ct_eq(token);
            matched |= eq;
            granted = u8::conditional_select(&granted, &(granted | scopes), eq);
        }
        if bool::from(matched) {
            Ok(Granted(granted))
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
    fn a_scoped_token_grants_only_its_scopes() {
        let auth = Auth::new(&[
            "all".into(),
            TokenConfig::Scoped(datanexus_config::ScopedToken {
                token: "reader".into(),
                scopes: vec![Scope::Query],
            }),
        ]);
        let reader = auth.check(Some(b"Bearer reader")).unwrap();
        assert!(reader.allows(Scope::Query));
        assert!(!reader.allows(Scope::Ingest) && !reader.allows(Scope::Admin));
        let e = reader.require(Scope::Ingest).unwrap_err();
        assert_eq!(e.to_string(), "this token lacks the scope `ingest`");
        assert_eq!(auth.check(Some(b"Bearer all")).unwrap(), Granted::ALL);
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
        assert_eq!(off.check(None).unwrap(), Granted::ALL);
    }
}
