//! Redaction of sensitive names (locals, dict keys, attribute names) before a snapshot leaves the
//! process.
//!
//! A name is normalised (lower case, `_` and `-` removed) and compared with two word lists:
//! * long, distinctive words (`password`, `apikey`, `accesstoken`...) match anywhere inside the
//!   normalised name (`db_password_hash` is redacted);
//! * short words that would match too much as substrings (`pin`, `otp`, `ssn`, `auth`...) match
//!   only a whole word of the name, split at `_`, `-` and camelCase humps (`user_pin` and
//!   `userPin` are redacted, `spinner` and `author` are not).

/// Words matched anywhere inside the normalised name.
const DEFAULT_SUBSTRING: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "accesstoken",
    "refreshtoken",
    "authorization",
    "authtoken",
    "cookie",
    "sessionid",
    "sessionkey",
    "csrf",
    "xsrf",
    "privatekey",
    "creditcard",
    "cardnumber",
    "signature",
    "credential",
    "bearer",
];

/// Words matched only as a whole word of the name.
const DEFAULT_WORD: &[&str] = &[
    "pwd", "auth", "cvv", "cvc", "ssn", "pin", "otp", "salt", "jwt",
];

/// The redaction rules of a process: defaults plus user additions, minus user exclusions.
#[derive(Debug)]
pub struct Redactor {
    substring: Vec<String>,
    word: Vec<String>,
    /// Verdicts for names seen before (names repeat: locals, fields, keys).
    cache: parking_lot::Mutex<crate::fasthash::FastMap<Box<str>, bool>>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new(&[], &[])
    }
}

/// Lower case, with `_` and `-` removed.
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Redactor {
    /// Defaults plus `add` (each normalised; words of 5+ characters match as substrings, shorter
    /// ones as whole words) minus `exclude` (normalised; removes a default from either list).
    pub fn new(add: &[String], exclude: &[String]) -> Self {
        let exclude: Vec<String> = exclude.iter().map(|e| normalise(e)).collect();
        let mut substring: Vec<String> = DEFAULT_SUBSTRING
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !exclude.contains(s))
            .collect();
        let mut word: Vec<String> = DEFAULT_WORD
            .iter()
            .map(|s| s.to_string())
            .filter(|s| !exclude.contains(s))
            .collect();
        for a in add {
            let n = normalise(a);
            if n.is_empty() {
                continue;
            }
            if n.len() >= 5 {
                substring.push(n);
            } else {
                word.push(n);
            }
        }
        Self {
            substring,
            word,
            cache: parking_lot::Mutex::new(crate::fasthash::FastMap::default()),
        }
    }

    /// Whether a value under this name must be redacted.
    pub fn is_sensitive(&self, name: &str) -> bool {
        if name.len() > 64 {
            return self.compute(name);
        }
        if let Some(v) = self.cache.lock().get(name) {
            return *v;
        }
        let v = self.compute(name);
        let mut c = self.cache.lock();
        if c.len() >= 8192 {
            c.clear();
        }
        c.insert(name.into(), v);
        v
    }

    fn compute(&self, name: &str) -> bool {
        // Fast path: most names are short identifiers; normalise into a stack buffer.
        let mut buf = [0u8; 64];
        let bytes = name.as_bytes();
        let norm: std::borrow::Cow<'_, str> = if bytes.len() <= 64 && name.is_ascii() {
            let mut n = 0;
            for &b in bytes {
                if b != b'_' && b != b'-' {
                    buf[n] = b.to_ascii_lowercase();
                    n += 1;
                }
            }
            // ASCII in, ASCII out.
            std::borrow::Cow::Borrowed(std::str::from_utf8(&buf[..n]).unwrap_or(""))
        } else {
            std::borrow::Cow::Owned(normalise(name))
        };
        if self.substring.iter().any(|s| norm.contains(s.as_str())) {
            return true;
        }
        if self.word.is_empty() {
            return false;
        }
        words(name).any(|w| self.word.iter().any(|s| s.eq_ignore_ascii_case(w)))
    }
}

/// Splits an identifier at `_`, `-`, `.` and camelCase humps (`userPin` → `user`, `Pin`).
fn words(name: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let b = name.as_bytes();
    let mut start = 0;
    for i in 0..b.len() {
        let c = b[i];
        if c == b'_' || c == b'-' || c == b'.' {
            if i > start {
                out.push(&name[start..i]);
            }
            start = i + 1;
        } else if i > start
            && c.is_ascii_uppercase()
            && (b[i - 1].is_ascii_lowercase() || b[i - 1].is_ascii_digit())
        {
            out.push(&name[start..i]);
            start = i;
        }
    }
    if start < b.len() {
        out.push(&name[start..]);
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let r = Redactor::default();
        for n in [
            "password",
            "DB_PASSWORD",
            "user-password-hash",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "access_token",
            "refreshToken",
            "Authorization",
            "auth",
            "basic_auth",
            "session_id",
            "csrf_token",
            "private_key",
            "credit_card_number",
            "card_number",
            "cvv",
            "ssn",
            "user_pin",
            "userPin",
            "otp",
            "signature",
            "salt",
            "secret",
            "client_secret",
            "cookie",
        ] {
            assert!(r.is_sensitive(n), "{n} should be redacted");
        }
        for n in [
            "username", "spinner", "author", "count", "items", "shipping", "path", "lessons",
        ] {
            assert!(!r.is_sensitive(n), "{n} should not be redacted");
        }
    }

    #[test]
    fn add_and_exclude() {
        let r = Redactor::new(&["iban".into(), "Customer_Email".into()], &["PIN".into()]);
        assert!(r.is_sensitive("iban"));
        assert!(r.is_sensitive("my_iban"));
        assert!(r.is_sensitive("customerEmail"));
        assert!(!r.is_sensitive("pin"));
        assert!(r.is_sensitive("password"));
    }

    #[test]
    fn normalises() {
        assert_eq!(normalise("Api_Key-X"), "apikeyx");
    }
}
