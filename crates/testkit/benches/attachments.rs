//! Attachment throughput (issue #18): a file uploaded and downloaded through the SDK over mTLS to
//! messaging-svc (encrypted and decrypted on the client, stored in the blob store, read from and
//! written to disk), next to a raw TLS transfer of the same number of bytes in each direction over
//! a connection with the same TLS (the runtime's rustls server config and accept loop with
//! messaging-svc's certificate, the SDK's client config), measured in the same run.
//!
//! Goal: SDK upload and download each at least 50% of the raw rate.
//!
//! Run: `cargo bench -p caremesh-testkit --bench attachments` (SQLite, and PostgreSQL when
//! `CAREMESH_TEST_DATABASE_URL` is set; env `BENCH_ATTACHMENT_MIB`, default 64, and
//! `BENCH_ROUNDS`, default 3: the median round is reported).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{Duration, Instant};

use caremesh_runtime::tls::{ReloadingMaterial, TlsFiles};
use caremesh_sdk::attachments::PreparedUpload;
use caremesh_sdk::auth::Role;
use caremesh_sdk::messaging::Messenger;
use caremesh_testkit::echo::EchoServer;
use caremesh_testkit::{TestMesh, backends};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1 << 20;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn write_file(path: &Path, len: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0;
    let mut block = vec![0u8; 1 << 16];
    while written < len {
        for byte in &mut block {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let take = usize::try_from((len - written).min(block.len() as u64)).unwrap();
        std::io::Write::write_all(&mut file, &block[..take]).unwrap();
        written += take as u64;
    }
    std::io::Write::flush(&mut file).unwrap();
}

/// `bytes` from client to server, then `bytes` back, over one TLS 1.3 connection with the mesh's
/// TLS: (upload, download) durations.
async fn raw_tls(tls: &caremesh_loadgen::EchoTls, bytes: u64) -> (Duration, Duration) {
    let material = ReloadingMaterial::load(tls.server.clone()).unwrap();
    let config = caremesh_runtime::tls::server::server_config(material).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut accepted = caremesh_runtime::tls::server::accept(listener, config);
    let server = tokio::spawn(async move {
        let mut stream = accepted.next().await.unwrap().unwrap();
        let mut buffer = vec![0u8; 1 << 20];
        let mut received = 0u64;
        while received < bytes {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0, "the client closed early");
            received += read as u64;
        }
        stream.write_all(b"k").await.unwrap();
        let mut sent = 0u64;
        while sent < bytes {
            let take = usize::try_from((bytes - sent).min(buffer.len() as u64)).unwrap();
            stream.write_all(&buffer[..take]).await.unwrap();
            sent += take as u64;
        }
        stream.flush().await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let client_material = ReloadingMaterial::load(TlsFiles::ca_only(&tls.ca)).unwrap();
    let config = caremesh_runtime::tls::client::client_config(&client_material).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let buffer = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let take = usize::try_from((bytes - sent).min(buffer.len() as u64)).unwrap();
        stream.write_all(&buffer[..take]).await.unwrap();
        sent += take as u64;
    }
    stream.flush().await.unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
    let upload = started.elapsed();
    let started = Instant::now();
    let mut received = 0u64;
    let mut buffer = vec![0u8; 1 << 20];
    while received < bytes {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the server closed early");
        received += read as u64;
    }
    let download = started.elapsed();
    server.await.unwrap();
    (upload, download)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let file_mib = env_number("BENCH_ATTACHMENT_MIB", 64);
        let rounds = env_number("BENCH_ROUNDS", 3).max(1);
        println!("attachments: a {file_mib} MiB file, {rounds} rounds (median shown), release build expected");
        for backend in backends() {
            let name = backend.name();
            let mesh = TestMesh::builder().backend(backend).start().await;
            let patient = mesh.patient().await;
            let doctor = mesh.staff(Role::Doctor, &[]).await;
            let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let sender = Messenger::open(mesh.sdk(), dirs.0.path(), "default", &patient.session)
                .await
                .unwrap();
            let receiver = Messenger::open(mesh.sdk(), dirs.1.path(), "default", &doctor.session)
                .await
                .unwrap();
            let files = tempfile::tempdir().unwrap();
            let path = files.path().join("scan.pdf");
            write_file(&path, file_mib * MIB);
            let tls = EchoServer::tls(&mesh);

            let (mut up, mut down, mut raw_up, mut raw_down) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let upload = PreparedUpload::new(&path, &caremesh_crypto::new_id()).unwrap();
                let blob_len = upload.blob_len();
                let started = Instant::now();
                let attachment = sender.upload_attachment(&patient.session, &upload, None).await.unwrap();
                up.push(rate(blob_len, started.elapsed()));
                sender
                    .send_attachment(&patient.session, &doctor.user_id, &upload, attachment, "", None)
                    .await
                    .unwrap();
                let (items, _) = receiver.inbox(&doctor.session, Default::default()).await.unwrap();
                let caremesh_sdk::messaging::Content::Attachment { attachment, .. } = &items[0].content else {
                    panic!("{name}: the newest message carries the attachment");
                };
                let out = files.path().join(format!("saved-{round}.pdf"));
                let started = Instant::now();
                receiver
                    .save_attachment(&doctor.session, attachment, &out, None)
                    .await
                    .unwrap();
                down.push(rate(blob_len, started.elapsed()));
                std::fs::remove_file(&out).unwrap();
                let (raw_upload, raw_download) = raw_tls(&tls, blob_len).await;
                raw_up.push(rate(blob_len, raw_upload));
                raw_down.push(rate(blob_len, raw_download));
            }
            let (up, down, raw_up, raw_down) = (median(up), median(down), median(raw_up), median(raw_down));
            println!(
                "{name}: upload {up:.1} MiB/s through the SDK vs {raw_up:.1} MiB/s raw TLS ({:.0}%, goal >= 50%)",
                100.0 * up / raw_up
            );
            println!(
                "{name}: download {down:.1} MiB/s through the SDK vs {raw_down:.1} MiB/s raw TLS ({:.0}%, goal >= 50%)",
                100.0 * down / raw_down
            );
            mesh.shutdown().await;
        }
    });
}
