//! Which authentication the bridge agrees to, before it hands a password over.
//!
//! libpq's `require_auth` (a list of `password`, `md5`, `scram-sha-256`, `none`, or the same
//! with `!` to forbid) chooses the methods; and, whatever it says, a cleartext `password`
//! request over a connection that is not encrypted is refused unless `sslmode=disable` was asked
//! for explicitly. Under the default `sslmode=prefer` a server that declines TLS — or a man in
//! the middle that does so on its behalf — would otherwise get the password in the clear.

/// How the bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tls,
    /// TCP without TLS.
    Plain,
    /// A Unix socket: it never leaves the machine.
    Local,
}

/// A `require_auth` that cannot be followed, or a server request the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthPolicyError {
    #[error("require_auth cannot mix methods and negated (!) methods")]
    MixedNegation,
    #[error("require_auth method `{0}` is not supported (use password, md5, scram-sha-256 or none)")]
    Unsupported(String),
    #[error("the server asks for `{method}` authentication, which require_auth does not allow ({allowed})")]
    NotAllowed { method: String, allowed: String },
    #[error(
        "the server asks for the password in clear text over a connection that is not encrypted; \
         refused — enable TLS on the server, use scram-sha-256, or set sslmode=disable to accept it"
    )]
    CleartextOverPlain,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthPolicy {
    /// `require_auth`: the methods allowed (`None`: any), after applying `!` negations.
    allowed: Option<Vec<String>>,
    /// `sslmode=disable` was asked for: the operator accepts an unencrypted connection.
    plaintext_accepted: bool,
}

const METHODS: [&str; 4] = ["password", "md5", "scram-sha-256", "none"];

impl AuthPolicy {
    /// From libpq's `require_auth` value (if any) and whether `sslmode=disable` was explicit.
    pub fn parse(require_auth: Option<&str>, plaintext_accepted: bool) -> Result<Self, AuthPolicyError> {
        let allowed = match require_auth.map(str::trim).filter(|v| !v.is_empty()) {
            None => None,
            Some(list) => {
                let items: Vec<&str> = list.split(',').map(str::trim).collect();
                let negated = items.iter().all(|i| i.starts_with('!'));
                if !negated && items.iter().any(|i| i.starts_with('!')) {
                    return Err(AuthPolicyError::MixedNegation);
                }
                for item in &items {
                    let name = item.trim_start_matches('!');
                    if !METHODS.contains(&name) {
                        return Err(AuthPolicyError::Unsupported(name.to_owned()));
                    }
                }
                let names: Vec<&str> = items.iter().map(|i| i.trim_start_matches('!')).collect();
                Some(
                    METHODS
                        .iter()
                        .filter(|m| names.contains(m) != negated)
                        .map(|m| (*m).to_owned())
                        .collect(),
                )
            }
        };
        Ok(Self {
            allowed,
            plaintext_accepted,
        })
    }

    /// Whether the server's request for `method` may be answered over `transport`; the error
    /// says why not.
    pub fn check(&self, method: &str, transport: Transport) -> Result<(), AuthPolicyError> {
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|m| m == method) {
                return Err(AuthPolicyError::NotAllowed {
                    method: method.to_owned(),
                    allowed: allowed.join(", "),
                });
            }
        }
        if method == "password" && transport == Transport::Plain && !self.plaintext_accepted {
            return Err(AuthPolicyError::CleartextOverPlain);
        }
        Ok(())
    }

    /// Whether a connection of this target can end up unencrypted and ask for anything, so
    /// that the query connection's authentication request must be looked at first.
    pub fn needs_probe(&self, tls_required: bool) -> bool {
        self.allowed.is_some() || (!tls_required && !self.plaintext_accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_is_refused_over_plain_tcp_unless_sslmode_disable_was_explicit() {
        let prefer = AuthPolicy::parse(None, false).unwrap();
        assert!(prefer
            .check("password", Transport::Plain)
            .unwrap_err()
            .to_string()
            .contains("clear text"));
        assert!(prefer.check("password", Transport::Tls).is_ok());
        assert!(prefer.check("password", Transport::Local).is_ok());
        assert!(prefer.check("scram-sha-256", Transport::Plain).is_ok());
        let disable = AuthPolicy::parse(None, true).unwrap();
        assert!(disable.check("password", Transport::Plain).is_ok());
    }

    #[test]
    fn require_auth_allows_or_forbids_methods() {
        let scram = AuthPolicy::parse(Some("scram-sha-256"), true).unwrap();
        assert!(scram.check("scram-sha-256", Transport::Plain).is_ok());
        assert!(scram
            .check("md5", Transport::Tls)
            .unwrap_err()
            .to_string()
            .contains("require_auth"));
        assert!(scram.check("none", Transport::Tls).is_err());
        let not_md5 = AuthPolicy::parse(Some("!md5,!password"), true).unwrap();
        assert!(not_md5.check("md5", Transport::Tls).is_err());
        assert!(not_md5.check("password", Transport::Tls).is_err());
        assert!(not_md5.check("none", Transport::Tls).is_ok());
        assert!(AuthPolicy::parse(Some("md5,!none"), true).is_err());
        assert!(AuthPolicy::parse(Some("gss"), true).is_err());
    }
}
