//! `caremesh`, the operator binary. Argument parsing and printing only: the work is done by
//! `caremesh-serve` (running the mesh), `caremesh-web` (the web app's HTTPS origin), `caremesh-pki`, the runtime and `caremesh-loadgen`
//! (`caremesh bench`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use caremesh_runtime::ServiceName;
use caremesh_runtime::config::{EnvSource, MapEnv, ProcessEnv, keys};
use caremesh_serve::{EmbeddedLayout, OPERATOR};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "caremesh", version, about = "Run and operate the caremesh service mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all five services in this process on the embedded default: SQLite files, a dev PKI
    /// and a key-encryption key under the data directory (created if missing).
    Up(UpArgs),
    /// Run the web app's HTTPS origin alone (gRPC-Web to the services, the app's static files),
    /// configured by the environment: CAREMESH_WEB_LISTEN, CAREMESH_WEB_ROOT, CAREMESH_TLS_DIR
    /// (ca.crt, web.crt, web.key), CAREMESH_<SERVICE>_ENDPOINT.
    Web,
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Bring every service's database schema up to date, then exit.
    Migrate(DatabaseArgs),
    /// Key-encryption key.
    Kek {
        #[command(subcommand)]
        command: KekCommand,
    },
    /// Check a service's plaintext health endpoint (the ops port); exits non-zero unless SERVING.
    /// For container health checks: needs no shell and no certificate.
    Health {
        #[arg(long, default_value = "127.0.0.1:50151")]
        addr: SocketAddr,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Write an encrypted, signed snapshot of every service's database (services keep running).
    Backup {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The key-encryption key file (default `<data dir>/kek.key`).
        #[arg(long, env = keys::KEK_FILE)]
        kek_file: Option<PathBuf>,
        /// Where to write the archive.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into empty databases (verifies its signature before writing anything).
    Restore {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The key-encryption key file the backup was made under (default `<data dir>/kek.key`).
        #[arg(long, env = keys::KEK_FILE)]
        kek_file: Option<PathBuf>,
        /// The archive to restore.
        #[arg(long)]
        from: PathBuf,
        /// Replace the contents of non-empty databases.
        #[arg(long)]
        force: bool,
    },
    /// The tamper-evident audit log (reads audit-svc's database directly).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Load-test a running mesh (`caremesh up` with the same data directory): simulated patients,
    /// doctors and an auditor through the SDK over mTLS, next to a bare TLS echo; prints a table
    /// and writes it as JSON.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The data directory `caremesh up` runs with (its dev PKI, bootstrap admin file and pid file).
    #[arg(long, env = keys::DATA_DIR, default_value = "data")]
    data_dir: PathBuf,
    /// The bootstrap admin's credentials (default `<data dir>/bootstrap-admin.txt`).
    #[arg(long)]
    admin_file: Option<PathBuf>,
    /// Simulated patients (each with its own device).
    #[arg(long, default_value_t = 24)]
    patients: usize,
    /// Simulated doctors (`dept:cardiology`, each with its own device).
    #[arg(long, default_value_t = 8)]
    doctors: usize,
    /// Concurrent workers, each in a closed loop (no pacing).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Length of the measured load.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Load before the measurement (not counted).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Length of the echo baseline.
    #[arg(long, default_value_t = 5)]
    echo_seconds: u64,
    /// Relative weights of the operations (login, message, record_write, record_read,
    /// audit_query); operations not named are not run.
    #[arg(long, default_value = caremesh_loadgen::DEFAULT_MIX)]
    mix: String,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-mesh.json")]
    json: PathBuf,
    /// A service run as its own process, to measure its memory: `name=PID` (repeatable). Without
    /// it, the process in `<data dir>/caremesh.pid` (`caremesh up`) is measured.
    #[arg(long = "service-pid", value_parser = caremesh_loadgen::mesh::parse_service_pid)]
    service_pids: Vec<(String, u32)>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the Merkle tree from the stored events and check every signed checkpoint;
    /// exits non-zero at the first inconsistency (edited, deleted, reordered or inserted event).
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The key-encryption key file (default `<data dir>/kek.key`).
        #[arg(long, env = keys::KEK_FILE)]
        kek_file: Option<PathBuf>,
    },
    /// Write every event with its inclusion proof against the latest checkpoint as JSON Lines.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Where to write (the first line is the checkpoint).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum KekCommand {
    /// Generate a key-encryption key into FILE (mode 0600); an existing file is kept.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct DatabaseArgs {
    /// Where SQLite files, the dev PKI and the key-encryption key live.
    #[arg(long, env = keys::DATA_DIR, default_value = "data")]
    data_dir: PathBuf,
    /// A postgres:// URL switches every service to PostgreSQL (one schema each).
    #[arg(long, env = keys::DATABASE_URL)]
    database_url: Option<String>,
}

#[derive(clap::Args)]
struct UpArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address every service listens on (its standard ports: 50051-50055, health 50151-50155).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Extra DNS names for the service certificates (e.g. this host's name).
    #[arg(long = "dns")]
    dns_names: Vec<String>,
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, a certificate per service, an operator certificate and the web origin's
    /// certificate (existing files are kept).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra DNS names for the service certificates.
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// Operator identities to issue certificates for.
        #[arg(long = "operator", default_value = OPERATOR)]
        operators: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("caremesh: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("caremesh: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    caremesh_runtime::tls::install_crypto_provider();
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Web => web().await,
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    dns_names,
                    operators,
                },
        } => {
            let services = ServiceName::ALL.map(ServiceName::as_str);
            let operators: Vec<&str> = operators.iter().map(String::as_str).collect();
            let mut report = caremesh_pki::init(&dir, &services, &operators, &dns_names)?;
            let web = caremesh_pki::init_web(&dir, &dns_names)?;
            report.created.extend(web.created);
            report.existing.extend(web.existing);
            for path in &report.created {
                println!("created  {}", path.display());
            }
            for path in &report.existing {
                println!("kept     {}", path.display());
            }
            Ok(())
        }
        Command::Kek {
            command: KekCommand::Init { out },
        } => {
            let (_, created) = caremesh_runtime::kek::Kek::load_or_generate(&out)?;
            println!("{}  {}", if created { "created" } else { "kept   " }, out.display());
            Ok(())
        }
        Command::Health { addr, timeout } => {
            caremesh_serve::wait_ready(ServiceName::Auth, addr, Duration::from_secs(timeout))
                .await
                .map_err(|_| anyhow::anyhow!("{addr} is not SERVING"))?;
            println!("{addr} SERVING");
            Ok(())
        }
        Command::Backup {
            database,
            kek_file,
            out,
        } => {
            let configs = EmbeddedLayout::new(&database.data_dir).configs(&database_env(&database))?;
            let kek_file = kek_file.unwrap_or_else(|| database.data_dir.join("kek.key"));
            let report = caremesh_backup::backup(&configs, &kek_file, &out).await?;
            for service in &report.services {
                println!(
                    "{:<18} {:>3} tables {:>9} rows",
                    service.service, service.tables, service.rows
                );
            }
            println!(
                "wrote    {} ({} bytes, taken {})",
                report.path.display(),
                report.bytes,
                report.created_at
            );
            println!("sha256   {}", report.sha256);
            println!(
                "keep the key-encryption key ({}) safe: the backup opens only with it",
                kek_file.display()
            );
            Ok(())
        }
        Command::Restore {
            database,
            kek_file,
            from,
            force,
        } => {
            let configs = EmbeddedLayout::new(&database.data_dir).configs(&database_env(&database))?;
            let kek_file = kek_file.unwrap_or_else(|| database.data_dir.join("kek.key"));
            let report = caremesh_backup::restore(&configs, &kek_file, &from, force).await?;
            println!("restored {} (taken {})", from.display(), report.created_at);
            for service in &report.services {
                println!(
                    "{:<18} {:>3} tables {:>9} rows",
                    service.service, service.tables, service.rows
                );
            }
            Ok(())
        }
        Command::Audit { command } => audit(command).await,
        Command::Bench(args) => bench(args).await,
        Command::Migrate(args) => {
            let layout = EmbeddedLayout::new(&args.data_dir);
            for config in layout.configs(&database_env(&args))? {
                caremesh_serve::migrate_service(&config)
                    .await
                    .with_context(|| format!("migrating {}", config.service))?;
                println!("{:<18} schema up to date", config.service.as_str());
            }
            Ok(())
        }
    }
}

/// `caremesh audit verify|export`: the work is in `audit_svc::verify`.
async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let (AuditCommand::Verify { database, .. } | AuditCommand::Export { database, .. }) = &command;
    let configs = EmbeddedLayout::new(&database.data_dir).configs(&database_env(database))?;
    let config = configs
        .iter()
        .find(|config| config.service == ServiceName::Audit)
        .context("no audit-svc configuration")?;
    let db = caremesh_runtime::db::connect(&config.database).await?;
    match command {
        AuditCommand::Verify { database, kek_file } => {
            let kek_file = kek_file.unwrap_or_else(|| database.data_dir.join("kek.key"));
            let kek = caremesh_runtime::kek::Kek::load(&kek_file)?;
            let report = audit_svc::verify::verify_log(&db, &kek)
                .await
                .context("the audit log is NOT intact")?;
            println!(
                "audit log intact: {} events, root {}",
                report.tree_size,
                hex_root(&report.root)
            );
            println!(
                "checked {} tree nodes and {} signed checkpoints (latest covers {} events)",
                report.nodes_checked, report.checkpoints_checked, report.latest_checkpoint
            );
            Ok(())
        }
        AuditCommand::Export { out, .. } => {
            let file = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            let count = audit_svc::verify::export_jsonl(&db, std::io::BufWriter::new(file)).await?;
            println!("wrote {count} events with inclusion proofs to {}", out.display());
            Ok(())
        }
    }
}

/// `caremesh bench`: the work is in `caremesh_loadgen`.
async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let mix = caremesh_loadgen::Mix::parse(&args.mix).map_err(anyhow::Error::msg)?;
    let settings = caremesh_loadgen::Settings {
        patients: args.patients,
        doctors: args.doctors,
        workers: args.workers,
        seconds: args.seconds,
        warmup_seconds: args.warmup,
        echo_seconds: args.echo_seconds,
        mix,
        progress: !args.quiet,
    };
    // The endpoints `caremesh up` listens on with this environment (standard ports unless
    // CAREMESH_<SERVICE>_LISTEN moves them).
    let layout = EmbeddedLayout::new(&args.data_dir);
    let configs = layout.configs(&ProcessEnv)?;
    let mut mesh = caremesh_loadgen::mesh::RunningMesh::embedded(&args.data_dir);
    if let Some(config) = configs.first() {
        mesh.pki_dir = config.tls.ca.parent().map_or(mesh.pki_dir, std::path::Path::to_owned);
        mesh.connect.ca = config.tls.ca.clone();
    }
    for config in &configs {
        let host = match config.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        mesh.connect = mesh
            .connect
            .with_endpoint(config.service, format!("{host}:{}", config.listen.port()));
    }
    if let Some(file) = args.admin_file {
        mesh.admin_file = file;
    }
    mesh.service_pids = args.service_pids;
    let target = caremesh_loadgen::mesh::running_mesh(&mesh).await?;
    let report = caremesh_loadgen::run(&target, &settings).await?;
    println!();
    print!("{}", report.table());
    let json = serde_json::json!({
        "benchmark": "mesh",
        "mode": "caremesh bench against a running mesh (real time)",
        "machine": caremesh_loadgen::report::machine(),
        "result": report.json(),
    });
    caremesh_loadgen::write_json(&args.json, &json).with_context(|| format!("writing {}", args.json.display()))?;
    eprintln!("wrote {}", args.json.display());
    Ok(())
}

fn hex_root(root: &[u8]) -> String {
    root.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The process environment, with the command line's database choice on top.
fn database_env(args: &DatabaseArgs) -> impl EnvSource + use<> {
    let mut overrides = MapEnv::default();
    if let Some(url) = &args.database_url {
        overrides = overrides.set(keys::DATABASE_URL, url.clone());
    }
    Layered(overrides, ProcessEnv)
}

struct Layered<A, B>(A, B);

impl<A: EnvSource, B: EnvSource> EnvSource for Layered<A, B> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).or_else(|| self.1.get(key))
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let env = ProcessEnv;
    let provider = caremesh_runtime::telemetry::tracer_provider(env.get(keys::OTLP_ENDPOINT).as_deref())?;
    let telemetry = caremesh_runtime::telemetry::install(provider, caremesh_runtime::entry::log_format(&env));

    let layout = EmbeddedLayout::new(&args.database.data_dir);
    let prepared = layout.prepare(&args.dns_names)?;
    let mut configs = layout.configs(&database_env(&args.database))?;
    for config in &mut configs {
        config.listen = SocketAddr::new(args.bind, config.listen.port());
        config.ops_listen = SocketAddr::new(args.bind, config.ops_listen.port());
    }
    let listeners = caremesh_serve::bind_all(&configs).await?;
    let bound: Vec<(ServiceName, SocketAddr, SocketAddr)> = configs
        .iter()
        .zip(&listeners)
        .filter_map(|(config, listeners)| Some((config.service, listeners.grpc_addr()?, listeners.ops_addr()?)))
        .collect();
    let web_config = up_web_config(&layout, &args, &bound)?;
    let web_listener = tokio::net::TcpListener::bind(web_config.listen)
        .await
        .with_context(|| {
            format!(
                "web origin: cannot bind {} (set {})",
                web_config.listen,
                caremesh_web::config::WEB_LISTEN
            )
        })?;
    let web_addr = web_listener.local_addr()?;
    let host = match args.bind {
        IpAddr::V4(ip) if ip.is_loopback() || ip.is_unspecified() => "localhost".to_owned(),
        ip => ip.to_string(),
    };
    let database = configs.first().map(|config| config.database.clone());
    let shutdown = CancellationToken::new();
    let services: Vec<_> = configs.into_iter().zip(listeners).collect();
    let mesh = tokio::spawn({
        let shutdown = shutdown.clone();
        // Passkeys are bound to the web app's origin, unless the environment names another.
        let env = Layered(
            database_env(&args.database),
            caremesh_serve::webauthn_env(&host, web_addr.port()),
        );
        async move { caremesh_serve::run_mesh(services, &env, shutdown).await }
    });
    let web = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let result = caremesh_web::serve(web_listener, web_config, shutdown.clone().cancelled_owned()).await;
            if result.is_err() {
                shutdown.cancel();
            }
            result
        }
    });
    let ready = async {
        for (service, _, ops) in &bound {
            caremesh_serve::wait_ready(*service, *ops, Duration::from_secs(30)).await?;
        }
        Ok::<(), caremesh_serve::MeshError>(())
    };
    tokio::select! {
        ready = ready => ready?,
        // A service failed to start and stopped the others: report why.
        () = shutdown.cancelled() => {
            mesh.await.context("the mesh task failed")??;
            anyhow::bail!("the mesh stopped during start-up");
        }
    }

    // For `caremesh bench`, which reads the services' memory from /proc/<pid>.
    let pid_file = caremesh_loadgen::mesh::pid_file(&layout.data_dir);
    if let Err(error) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        tracing::warn!(path = %pid_file.display(), %error, "cannot write the pid file");
    }

    let pki = &layout.pki;
    println!();
    match database {
        Some(database) if database.is_postgres() => println!("caremesh is up on PostgreSQL (one schema per service)"),
        _ => println!(
            "caremesh is up on the embedded default (SQLite under {})",
            layout.data_dir.display()
        ),
    }
    if prepared.pki_created {
        println!("created a dev PKI in {}", pki.dir().display());
    }
    if prepared.kek_created {
        println!("created a key-encryption key at {}", layout.kek_file.display());
    }
    println!();
    for (service, grpc, ops) in &bound {
        println!(
            "  {:<18} {host}:{}   (health, plaintext: {host}:{})",
            service.as_str(),
            grpc.port(),
            ops.port()
        );
    }
    println!();
    println!("  web app: https://{host}:{}/", web_addr.port());
    let auth_port = bound
        .iter()
        .find(|(service, _, _)| *service == ServiceName::Auth)
        .map_or(ServiceName::Auth.default_port(), |(_, grpc, _)| grpc.port());
    println!();
    println!("  CA certificate        {}", pki.ca_cert().display());
    println!("  operator certificate  {}", pki.operator_cert(OPERATOR).display());
    println!("  operator key          {}", pki.operator_key(OPERATOR).display());
    println!();
    println!("Try:");
    println!(
        "  grpcurl -cacert {} -cert {} -key {} {host}:{} list",
        pki.ca_cert().display(),
        pki.operator_cert(OPERATOR).display(),
        pki.operator_key(OPERATOR).display(),
        auth_port
    );
    println!("  carectl --ca {} status", pki.ca_cert().display());
    if let Some(file) = caremesh_serve::bootstrap_admin_file(&layout.data_dir) {
        println!();
        println!("The first administrator's username, password and TOTP secret are in");
        println!(
            "  {}   (readable only by you: sign in, store them safely, then delete the file)",
            file.display()
        );
    }
    println!();
    println!("Ctrl-C stops the mesh.");

    tokio::select! {
        () = caremesh_runtime::entry::shutdown_signal() => {
            println!("stopping: draining in-flight calls...");
            shutdown.cancel();
        }
        // A service failed and stopped the others.
        () = shutdown.cancelled() => {}
    }
    let result = mesh.await;
    let web_result = web.await;
    telemetry.shutdown();
    let _ = std::fs::remove_file(&pid_file);
    result.context("the mesh task failed")??;
    web_result.context("the web origin task failed")??;
    println!("stopped.");
    Ok(())
}

/// The web origin of `caremesh up`: the layout's PKI, in front of the services as bound, on
/// `--bind`:8443 unless CAREMESH_WEB_LISTEN says otherwise.
fn up_web_config(
    layout: &EmbeddedLayout,
    args: &UpArgs,
    bound: &[(ServiceName, SocketAddr, SocketAddr)],
) -> anyhow::Result<caremesh_web::WebConfig> {
    let env = Layered(
        MapEnv::default().set(keys::DATA_DIR, layout.data_dir.display().to_string()),
        ProcessEnv,
    );
    let mut config = caremesh_web::WebConfig::from_env(&env)?;
    if ProcessEnv.get(caremesh_web::config::WEB_LISTEN).is_none() {
        config.listen = SocketAddr::new(args.bind, caremesh_web::config::DEFAULT_PORT);
    }
    for (service, grpc, _) in bound {
        let ip = match grpc.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        config
            .upstreams
            .insert(*service, SocketAddr::new(ip, grpc.port()).to_string());
    }
    Ok(config)
}

/// `caremesh web`: the web origin alone, configured by the environment (Kubernetes runs it so).
async fn web() -> anyhow::Result<()> {
    let env = ProcessEnv;
    let provider = caremesh_runtime::telemetry::tracer_provider(env.get(keys::OTLP_ENDPOINT).as_deref())?;
    let telemetry = caremesh_runtime::telemetry::install(provider, caremesh_runtime::entry::log_format(&env));
    let config = caremesh_web::WebConfig::from_env(&env)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot bind {}", config.listen))?;
    println!("web app: https://{}/", listener.local_addr()?);
    let result = caremesh_web::serve(listener, config, caremesh_runtime::entry::shutdown_signal()).await;
    telemetry.shutdown();
    Ok(result?)
}
