//! `caremesh bench` against a real `caremesh up` (both binaries, a fresh data directory, free
//! ports): a short run with a tiny mix in which every operation succeeds, nothing fails, the
//! JSON has the figures the README promises, and the services' memory is read through the pid
//! file `caremesh up` writes (and removes when it stops).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::process::Command;

#[test]
fn caremesh_bench_drives_a_running_caremesh_up_with_every_operation_and_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = common::free_ports(10);
    // auth-svc's per-address throttles raised: one load generator stands in for many people.
    let common::Up { mut child, .. } = common::start_up(dir.path(), &data, &ports, |command| {
        command
            .env("CAREMESH_AUTH_LOGIN_RATE_PER_MINUTE", "1000000")
            .env("CAREMESH_AUTH_REGISTER_RATE_PER_MINUTE", "1000000");
    });
    let pid_file = data.join("caremesh.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        child.id().to_string()
    );

    let json_path = dir.path().join("bench.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_caremesh"));
    bench
        .args(["bench", "--data-dir"])
        .arg(&data)
        .args([
            "--patients",
            "2",
            "--doctors",
            "1",
            "--workers",
            "3",
            "--seconds",
            "2",
            "--warmup",
            "0",
            "--echo-seconds",
            "1",
            "--mix",
            "login=1,message=1,record_write=1,record_read=1,audit_query=1",
            "--json",
        ])
        .arg(&json_path)
        .current_dir(dir.path());
    common::mesh_env(&mut bench, &ports);
    let output = bench.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    common::interrupt(&child);
    let exit = child.wait().unwrap();

    assert!(output.status.success(), "caremesh bench failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("bare tonic unary echo, same TLS"), "{stdout}");
    assert!(stderr.contains("ops/s"), "no progress line:\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let result = &json["result"];
    for op in ["login", "message", "record_write", "record_read", "audit_query"] {
        let figures = &result["operations"][op];
        assert!(
            figures["count"].as_u64().unwrap() >= 1,
            "{op} never succeeded:\n{stdout}"
        );
        assert_eq!(figures["errors"], serde_json::json!({}), "{op} had errors:\n{stdout}");
        for field in ["ops_per_second", "p50_ms", "p99_ms", "p999_ms"] {
            assert!(figures[field].as_f64().is_some(), "{op}.{field} missing");
        }
    }
    assert_eq!(result["total"]["errors"], 0, "{stdout}");
    assert!(result["echo_baseline"]["ops_per_second"].as_f64().unwrap() > 0.0);
    assert!(result["mesh_to_echo_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(result["logins"]["clock"], "real time");
    let process = &result["memory"]["processes"][0];
    assert_eq!(process["name"], "caremesh up");
    assert_eq!(process["pid"], child.id());
    if cfg!(target_os = "linux") {
        assert!(process["peak_rss_during_load_kib"].as_u64().unwrap() > 0, "{process}");
        assert_eq!(process["peak_reset_before_load"], true, "{process}");
    }

    assert!(exit.success(), "caremesh up exited with {exit:?}");
    assert!(!pid_file.exists(), "caremesh up left its pid file behind");
}
