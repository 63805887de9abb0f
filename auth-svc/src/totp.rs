//! TOTP (RFC 6238): HMAC-SHA1, 6 digits, 30-second steps by default; codes accepted within one
//! step either side, and each step at most once (the caller stores the last accepted step).

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

pub const DIGITS: u32 = 6;
pub const PERIOD_SECONDS: i64 = 30;
/// Secret length: 160 bits, as RFC 4226 recommends for SHA-1.
pub const SECRET_LEN: usize = 20;

/// The hash behind the HMAC. Enrollment uses SHA-1 (what authenticator apps support); the others
/// exist for RFC 6238's test vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// The code for time step `step`.
pub fn code_at_step(secret: &[u8], step: u64, algorithm: Algorithm, digits: u32) -> Option<u32> {
    let counter = step.to_be_bytes();
    let digest = match algorithm {
        Algorithm::Sha1 => mac::<Hmac<sha1::Sha1>>(secret, &counter)?,
        Algorithm::Sha256 => mac::<Hmac<sha2::Sha256>>(secret, &counter)?,
        Algorithm::Sha512 => mac::<Hmac<sha2::Sha512>>(secret, &counter)?,
    };
    // Dynamic truncation (RFC 4226 §5.3).
    let offset = usize::from(digest.last()? & 0x0f);
    let bytes: [u8; 4] = digest.get(offset..offset + 4)?.try_into().ok()?;
    let value = u32::from_be_bytes(bytes) & 0x7fff_ffff;
    Some(value % 10u32.checked_pow(digits)?)
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Option<Vec<u8>> {
    let mut mac = <M as KeyInit>::new_from_slice(key).ok()?;
    mac.update(message);
    Some(mac.finalize().into_bytes().to_vec())
}

/// The time step of Unix time `seconds`.
pub fn step_at(seconds: i64) -> u64 {
    u64::try_from(seconds.div_euclid(PERIOD_SECONDS)).unwrap_or(0)
}

/// Checks `code` against the steps around `now`, newer than `last_used_step`. Returns the
/// matching step (to store, so the code cannot be replayed).
pub fn verify(secret: &[u8], code: &str, now: i64, last_used_step: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let current = step_at(now);
    let mut matched = None;
    // Check every candidate (no early exit) so timing does not tell which step matched.
    for step in [current.saturating_sub(1), current, current.saturating_add(1)] {
        let expected = format!(
            "{:0width$}",
            code_at_step(secret, step, Algorithm::Sha1, DIGITS)?,
            width = DIGITS as usize
        );
        let fresh = last_used_step.is_none_or(|last| step > last);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// The secret in base32 (RFC 4648, no padding), as authenticator apps take it.
pub fn encode_secret(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let label = format!("{}:{}", percent(issuer), percent(account));
    format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}",
        encode_secret(secret),
        percent(issuer)
    )
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the seeds, times and 8-digit codes for SHA-1, SHA-256 and SHA-512.
    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let sha1 = b"12345678901234567890".to_vec();
        let sha256 = b"12345678901234567890123456789012".to_vec();
        let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".to_vec();
        let vectors: [(i64, u32, u32, u32); 6] = [
            (59, 94287082, 46119246, 90693936),
            (1111111109, 7081804, 68084774, 25091201),
            (1111111111, 14050471, 67062674, 99943326),
            (1234567890, 89005924, 91819424, 93441116),
            (2000000000, 69279037, 90698825, 38618901),
            (20000000000, 65353130, 77737706, 47863826),
        ];
        for (time, code1, code256, code512) in vectors {
            let step = step_at(time);
            assert_eq!(
                code_at_step(&sha1, step, Algorithm::Sha1, 8),
                Some(code1),
                "SHA-1 at {time}"
            );
            assert_eq!(
                code_at_step(&sha256, step, Algorithm::Sha256, 8),
                Some(code256),
                "SHA-256 at {time}"
            );
            assert_eq!(
                code_at_step(&sha512, step, Algorithm::Sha512, 8),
                Some(code512),
                "SHA-512 at {time}"
            );
        }
    }

    fn code(secret: &[u8], time: i64) -> String {
        format!(
            "{:06}",
            code_at_step(secret, step_at(time), Algorithm::Sha1, 6).unwrap()
        )
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_only_once() {
        let secret = [7u8; SECRET_LEN];
        let now = 1_700_000_000;
        let accepted = verify(&secret, &code(&secret, now), now, None).unwrap();
        assert_eq!(accepted, step_at(now));
        assert_eq!(
            verify(&secret, &code(&secret, now), now, Some(accepted)),
            None,
            "replay refused"
        );
        assert!(
            verify(&secret, &code(&secret, now - 30), now, None).is_some(),
            "previous step"
        );
        assert!(
            verify(&secret, &code(&secret, now + 30), now, None).is_some(),
            "next step"
        );
        assert_eq!(
            verify(&secret, &code(&secret, now - 60), now, None),
            None,
            "two steps old"
        );
        assert_eq!(verify(&secret, "12345", now, None), None);
        assert_eq!(verify(&secret, "abcdef", now, None), None);
    }

    #[test]
    fn otpauth_uri_names_issuer_account_and_parameters() {
        let uri = otpauth_uri("caremesh", "dr house", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/caremesh:dr%20house?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=caremesh&algorithm=SHA1&digits=6&period=30"
        );
    }
}
