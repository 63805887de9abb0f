//! The Rust half of the web benchmark's record decryption (`web/bench/run.mjs`): a FAME key holding
//! 10 attributes and a ciphertext under the AND of all ten (the costliest policy for that key: every
//! row is used), timed here and printed as one JSON line with the bytes, so that Chromium opens the
//! very same ciphertext and checks it gets the same data key.
//!
//! `cargo run --release -p caremesh-abe --example fame_timing` (`FAME_TIMING_RUNS`, default 21).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{Policy, decapsulate, encapsulate, keygen, setup};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() {
    let runs: usize = std::env::var("FAME_TIMING_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let attributes: Vec<String> = (0..10).map(|i| format!("bench:attribute-{i:02}")).collect();
    let policy = attributes
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(" and ");
    let (pp, msk) = setup(&mut OsRng);
    let key = keygen(&pp, &msk, &attributes, &mut OsRng).unwrap();
    let (data_key, ciphertext) = encapsulate(&pp, &Policy::parse(&policy).unwrap(), &mut OsRng).unwrap();
    assert_eq!(decapsulate(&key, &ciphertext).unwrap(), data_key);

    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(decapsulate(&key, &ciphertext).unwrap());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"attributes\":{},\"runs\":{runs},\"decrypt_ms\":{:.3},\"public_params\":\"{}\",\"user_key\":\"{}\",\"ciphertext\":\"{}\",\"data_key\":\"{}\"}}",
        attributes.len(),
        times[times.len() / 2],
        hex(&pp.to_bytes()),
        hex(&key.to_bytes()),
        hex(&ciphertext.to_bytes()),
        hex(data_key.as_bytes()),
    );
}
