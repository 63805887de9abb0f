//! The security headers every response of the web origin carries, proxied gRPC-Web answers and
//! error pages included.
//!
//! - `Content-Security-Policy`: everything from this origin only, no inline script or style, no
//!   `eval`, no framing, no `<base>`, no plugins; images may also be `data:`/`blob:` URLs (QR
//!   codes drawn by the app).
//! - `Strict-Transport-Security`: one year, HTTPS only from then on.
//! - `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.
//! - `Permissions-Policy`: the camera for this origin only (scanning a device-link QR code, later);
//!   microphone, geolocation, payment, USB and the rest of the powerful features off.
//! - `Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Resource-Policy: same-origin`: no
//!   other site gets a window handle on the app or embeds its responses.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";
pub const PERMISSIONS_POLICY: &str =
    "camera=(self), microphone=(), geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), interest-cohort=()";

/// The headers, in the order they are set.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("strict-transport-security", STRICT_TRANSPORT_SECURITY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("permissions-policy", PERMISSIONS_POLICY),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Sets every security header (replacing whatever an upstream sent) and removes any CORS grant.
pub fn apply(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-headers",
        "access-control-allow-methods",
        "access-control-expose-headers",
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_has_no_unsafe_sources() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains('*'));
        let mut headers = HeaderMap::new();
        headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        apply(&mut headers);
        assert!(headers.get("access-control-allow-origin").is_none());
        assert_eq!(
            headers.get("x-content-type-options").map(HeaderValue::as_bytes),
            Some(&b"nosniff"[..])
        );
    }
}
