//! The auth-svc binary. Configuration comes from `CAREMESH_*` environment variables (see
//! `caremesh_runtime::config::keys`); `caremesh up` runs the same service in-process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    caremesh_runtime::entry::run(auth_svc::serve).await
}
