//! `caremesh_token::verify` (and `peek_key_id`) on arbitrary text, with a fixed key and clock.
//! It must never panic. A lookup that ignores the key id gets the same answer as an honest one
//! (the verifier checks the key id itself). Accepted claims name the key, are within their
//! lifetime, and re-signing them gives a token that verifies to the same claims.
#![no_main]

mod common;

use caremesh_token::{CLOCK_SKEW_SECONDS, key_id, peek_key_id, sign, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let signing = common::token_key();
    let public = signing.verifying_key();
    let kid = key_id(&public);
    let honest = verify(token, |id| (id == kid).then_some(public), common::TOKEN_NOW);
    let careless = verify(token, |_| Some(public), common::TOKEN_NOW);
    assert_eq!(honest, careless);
    let peeked = peek_key_id(token);
    if let Ok(claims) = honest {
        assert_eq!(claims.kid, kid);
        assert_eq!(peeked.as_deref(), Ok(kid.as_str()));
        assert!(common::TOKEN_NOW < claims.exp);
        assert!(claims.iat <= common::TOKEN_NOW + CLOCK_SKEW_SECONDS);
        let resigned = sign(&claims, &signing).expect("accepted claims can be signed again");
        assert_eq!(verify(&resigned, |_| Some(public), common::TOKEN_NOW), Ok(claims));
    }
});
