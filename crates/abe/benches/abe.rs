//! Keygen, encrypt (encapsulate) and decrypt for AND policies of 1..32 attributes: caremesh's
//! FAME on BLS12-381 next to rabe 0.4.2's AC17 (FAME on BN254) in the same run, median of N runs.
//!
//! `cargo bench -p caremesh-abe --bench abe` (set `ABE_BENCH_RUNS` to change N, default 15).
//! rabe's AND must be written as nested binary ANDs (its span-program code panics on a flat
//! three-way `and`); caremesh gets the flat n-ary form, which yields the same matrix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use caremesh_abe::rand_core::OsRng;
use caremesh_abe::{Ciphertext, Policy, decapsulate, encapsulate, keygen, setup};
use rabe::schemes::ac17;
use rabe::utils::policy::pest::PolicyLanguage;

const SIZES: [usize; 6] = [1, 2, 5, 10, 20, 32];

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up (also fills caremesh's per-process column-hash cache)
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn attributes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("attr:a{i:02}")).collect()
}

fn flat(attrs: &[String], op: &str) -> String {
    attrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(&format!(" {op} "))
}

/// `"a0" and ("a1" and ("a2" and ...))`: the only n-ary AND rabe accepts.
fn nested_and(attrs: &[String]) -> String {
    match attrs {
        [] => String::new(),
        [one] => format!("\"{one}\""),
        [first, rest @ ..] => {
            let inner = nested_and(rest);
            if rest.len() == 1 {
                format!("\"{first}\" and {inner}")
            } else {
                format!("\"{first}\" and ({inner})")
            }
        }
    }
}

struct Row {
    n: usize,
    keygen: Duration,
    encrypt: Duration,
    decrypt: Duration,
    encrypt_or: Duration,
    decrypt_or: Duration,
    parse: Duration,
    ct_len: usize,
    rabe_keygen: Option<Duration>,
    rabe_encrypt: Option<Duration>,
    rabe_decrypt: Option<Duration>,
}

fn main() {
    let runs: usize = std::env::var("ABE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let (pp, msk) = setup(&mut OsRng);
    let (rabe_pk, rabe_msk) = ac17::setup();
    let plaintext = vec![0u8; 32];
    let mut rows = Vec::new();

    for n in SIZES {
        let attrs = attributes(n);
        let and = Policy::parse(&flat(&attrs, "and")).unwrap();
        let or = Policy::parse(&flat(&attrs, "or")).unwrap();
        let key = keygen(&pp, &msk, &attrs, &mut OsRng).unwrap();
        let (data_key, ct) = encapsulate(&pp, &and, &mut OsRng).unwrap();
        assert_eq!(decapsulate(&key, &ct).unwrap(), data_key);
        let (_, ct_or) = encapsulate(&pp, &or, &mut OsRng).unwrap();
        let ct_bytes = ct.to_bytes();

        let keygen_t = median(runs, || {
            black_box(keygen(&pp, &msk, &attrs, &mut OsRng).unwrap());
        });
        let encrypt = median(runs, || {
            black_box(encapsulate(&pp, &and, &mut OsRng).unwrap());
        });
        let decrypt = median(runs, || {
            black_box(decapsulate(&key, &ct).unwrap());
        });
        let encrypt_or = median(runs, || {
            black_box(encapsulate(&pp, &or, &mut OsRng).unwrap());
        });
        let decrypt_or = median(runs, || {
            black_box(decapsulate(&key, &ct_or).unwrap());
        });
        let parse = median(runs, || {
            black_box(Ciphertext::from_bytes(&ct_bytes).unwrap());
        });

        // rabe AC17, same attributes, nested binary AND.
        let names: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let rabe_policy = nested_and(&attrs);
        let rabe = std::panic::catch_unwind(|| {
            let sk = ac17::cp_keygen(&rabe_msk, &names).unwrap();
            let ct = ac17::cp_encrypt(&rabe_pk, &rabe_policy, &plaintext, PolicyLanguage::HumanPolicy).unwrap();
            assert_eq!(ac17::cp_decrypt(&sk, &ct).unwrap(), plaintext);
            let keygen = median(runs, || {
                black_box(ac17::cp_keygen(&rabe_msk, &names).unwrap());
            });
            let encrypt = median(runs, || {
                black_box(ac17::cp_encrypt(&rabe_pk, &rabe_policy, &plaintext, PolicyLanguage::HumanPolicy).unwrap());
            });
            let decrypt = median(runs, || {
                black_box(ac17::cp_decrypt(&sk, &ct).unwrap());
            });
            (keygen, encrypt, decrypt)
        })
        .ok();

        rows.push(Row {
            n,
            keygen: keygen_t,
            encrypt,
            decrypt,
            encrypt_or,
            decrypt_or,
            parse,
            ct_len: ct_bytes.len(),
            rabe_keygen: rabe.map(|r| r.0),
            rabe_encrypt: rabe.map(|r| r.1),
            rabe_decrypt: rabe.map(|r| r.2),
        });
    }

    let opt = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "panic".into());
    println!();
    println!("caremesh-abe (FAME, BLS12-381, blst) vs rabe 0.4.2 AC17 (FAME, BN254); median of {runs} runs, ms");
    println!("AND policy of n attributes, key holding all n; OR = flat n-ary OR (decrypt uses one row)");
    println!();
    let header = [
        "n",
        "keygen",
        "rabe keygen",
        "encrypt",
        "rabe encrypt",
        "decrypt",
        "rabe decrypt",
        "speedup",
        "encrypt OR",
        "decrypt OR",
        "ct parse",
        "ct bytes",
    ];
    println!("| {} |", header.join(" | "));
    println!("|{}", "---:|".repeat(header.len()));
    for r in &rows {
        let speedup = r
            .rabe_decrypt
            .map(|d| format!("{:.1}x", d.as_secs_f64() / r.decrypt.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let cells = [
            r.n.to_string(),
            ms(r.keygen),
            opt(r.rabe_keygen),
            ms(r.encrypt),
            opt(r.rabe_encrypt),
            ms(r.decrypt),
            opt(r.rabe_decrypt),
            speedup,
            ms(r.encrypt_or),
            ms(r.decrypt_or),
            ms(r.parse),
            r.ct_len.to_string(),
        ];
        println!("| {} |", cells.join(" | "));
    }

    println!();
    let worst_decrypt = rows.iter().map(|r| r.decrypt).max().unwrap_or_default();
    let min_speedup = rows
        .iter()
        .filter_map(|r| r.rabe_decrypt.map(|d| d.as_secs_f64() / r.decrypt.as_secs_f64()))
        .fold(f64::INFINITY, f64::min);
    let encrypt10 = rows.iter().find(|r| r.n == 10).map(|r| r.encrypt).unwrap_or_default();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "goal: decrypt <= 2 ms for every n ............ worst {} ms   {}",
        ms(worst_decrypt),
        verdict(worst_decrypt <= Duration::from_millis(2))
    );
    println!(
        "goal: decrypt >= 10x faster than rabe AC17 ... least {min_speedup:.1}x   {}",
        verdict(min_speedup >= 10.0)
    );
    println!(
        "goal: encrypt with 10 attributes <= 15 ms .... {} ms   {}",
        ms(encrypt10),
        verdict(encrypt10 <= Duration::from_millis(15))
    );
}
