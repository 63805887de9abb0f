//! `carectl`, the caremesh CLI for users and admins. It parses arguments, prompts, and prints
//! results (as text, or JSON with `--json`); the SDK (`caremesh-sdk`) does the talking. Sessions
//! are kept per profile under a home directory, in files only the user can read.

mod account;
mod admin;
mod audit;
mod devices;
mod messaging;
mod passkeys;
mod records;

use std::path::PathBuf;
use std::process::ExitCode;

use caremesh_sdk::auth::Session;
use caremesh_sdk::profile::ProfileStore;
use caremesh_sdk::{Client, ConnectOptions, Health, SdkError, ServiceName};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "carectl", version, about = "Talk to a caremesh mesh")]
struct Cli {
    /// The mesh CA certificate.
    #[arg(long, env = "CARECTL_CA", default_value = "data/pki/ca.crt", global = true)]
    ca: PathBuf,
    /// Host the services run on (each at its standard port).
    #[arg(long, env = "CARECTL_HOST", default_value = "localhost", global = true)]
    host: String,
    /// Where one service is, overriding --host: `SERVICE=HOST:PORT` (e.g. `audit-svc=10.0.0.5:50055`).
    #[arg(long = "endpoint", value_parser = parse_endpoint, global = true)]
    endpoints: Vec<(ServiceName, String)>,
    /// Client certificate (operators); users connect without one.
    #[arg(long, env = "CARECTL_CERT", requires = "key", global = true)]
    cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "CARECTL_KEY", requires = "cert", global = true)]
    key: Option<PathBuf>,
    /// Where sessions are kept (default: the user's config directory, `caremesh/`).
    #[arg(long, env = "CARECTL_HOME", global = true)]
    home: Option<PathBuf>,
    /// Which saved session to use: several accounts can be signed in side by side.
    #[arg(long, env = "CARECTL_PROFILE", default_value = "default", global = true)]
    profile: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Health of all five services.
    Status,
    /// Create an account (patients are active at once; doctors and nurses wait for approval).
    Register(account::RegisterArgs),
    /// Sign in: password, then a TOTP or recovery code when MFA is enrolled.
    Login(account::LoginArgs),
    /// End the session.
    Logout,
    /// Who this profile is signed in as.
    Whoami,
    /// Two-factor authentication.
    Mfa {
        #[command(subcommand)]
        command: account::MfaCommand,
    },
    /// Replace your recovery codes (the old ones stop working).
    RecoveryCodes,
    /// Your passkeys: list, rename, remove. Adding a passkey, and signing in with one, need a
    /// browser (WebAuthn): use the web app's Passkeys page.
    Passkey {
        #[command(subcommand)]
        command: passkeys::PasskeyCommand,
    },
    /// Administration (admins, with MFA).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// End-to-end encrypted messages.
    Msg {
        #[command(subcommand)]
        command: messaging::MsgCommand,
    },
    /// Your devices: list, link a new one, approve, remove.
    Device {
        #[command(subcommand)]
        command: devices::DeviceCommand,
    },
    /// Contacts' identity keys and safety numbers.
    Contacts {
        #[command(subcommand)]
        command: messaging::ContactsCommand,
    },
    /// Patient records: FHIR JSON encrypted under attribute policies, versioned and signed.
    Records {
        #[command(subcommand)]
        command: records::RecordsCommand,
    },
    /// Break-glass access to a patient's records for a limited time (doctors; audited, alerts
    /// auditors).
    Emergency {
        /// The patient's username or user id.
        patient: String,
        /// Why (shown to auditors and the patient; no clinical detail).
        #[arg(long)]
        reason: String,
        /// How long, in minutes (default: the authority's default, one hour).
        #[arg(long)]
        minutes: Option<u64>,
    },
    /// The tamper-evident audit log: queries and alerts (auditors), checkpoint verification.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Who accessed your records, when, and why (auditors: any patient's, with --patient).
    AccessLog {
        #[arg(long)]
        patient: Option<String>,
        /// Also list your own accesses.
        #[arg(long)]
        include_own: bool,
    },
}

/// What every command works with.
pub struct Ctx {
    pub client: Client,
    pub store: ProfileStore,
    pub profile: String,
    pub json: bool,
}

impl Ctx {
    /// The saved session, refreshed first when its access token is about to expire.
    pub async fn session(&self) -> Result<Session, SdkError> {
        let session = self.store.load(&self.profile)?.ok_or_else(|| {
            SdkError::Local(format!(
                "not signed in (profile {}): run `carectl login <username>` first",
                self.profile
            ))
        })?;
        if session.expires_within(chrono::Utc::now(), chrono::TimeDelta::seconds(60)) {
            let refreshed = self.client.refresh(&session).await?;
            self.store.save(&self.profile, &refreshed)?;
            return Ok(refreshed);
        }
        Ok(session)
    }

    /// Prints `json` with `--json`, else `text`.
    pub fn print(&self, json: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        } else {
            println!("{}", text());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("carectl: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("carectl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, SdkError> {
    let mut options = ConnectOptions::new(&cli.ca, &cli.host);
    if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
        options = options.with_identity(cert, key);
    }
    for (service, endpoint) in &cli.endpoints {
        options = options.with_endpoint(*service, endpoint.clone());
    }
    let home = match cli.home {
        Some(home) => home,
        None => dirs::config_dir()
            .map(|dir| dir.join("caremesh"))
            .ok_or_else(|| SdkError::Local("no config directory: pass --home or set CARECTL_HOME".to_owned()))?,
    };
    let ctx = Ctx {
        client: Client::connect(&options)?,
        store: ProfileStore::new(home),
        profile: cli.profile,
        json: cli.json,
    };
    match cli.command {
        Command::Status => return Ok(status(&ctx).await),
        Command::Register(args) => account::register(&ctx, args).await?,
        Command::Login(args) => account::login(&ctx, args).await?,
        Command::Logout => account::logout(&ctx).await?,
        Command::Whoami => account::whoami(&ctx).await?,
        Command::Mfa { command } => account::mfa(&ctx, command).await?,
        Command::RecoveryCodes => account::recovery_codes(&ctx).await?,
        Command::Passkey { command } => passkeys::run(&ctx, command).await?,
        Command::Admin { command } => admin::run(&ctx, command).await?,
        Command::Msg { command } => messaging::msg(&ctx, command).await?,
        Command::Contacts { command } => messaging::contacts(&ctx, command).await?,
        Command::Device { command } => devices::device(&ctx, command).await?,
        Command::Records { command } => records::run(&ctx, command).await?,
        Command::Emergency {
            patient,
            reason,
            minutes,
        } => records::emergency(&ctx, patient, reason, minutes).await?,
        Command::Audit { command } => audit::run(&ctx, command).await?,
        Command::AccessLog { patient, include_own } => audit::access_log(&ctx, patient, include_own).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(ctx: &Ctx) -> ExitCode {
    let statuses = ctx.client.status().await;
    ctx.print(serde_json::to_value(&statuses).unwrap_or_default(), || {
        statuses
            .iter()
            .map(|status| {
                let health = match &status.health {
                    Health::Serving => "SERVING".to_owned(),
                    Health::NotServing(state) => state.clone(),
                    Health::Unreachable(why) => format!("UNREACHABLE ({why})"),
                };
                format!(
                    "{:<18} {:<22} {health:<12} {:>6.1} ms",
                    status.service.as_str(),
                    status.endpoint,
                    status.latency.as_secs_f64() * 1000.0
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let all_serving = statuses.iter().all(|status| status.health == Health::Serving);
    if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_endpoint(value: &str) -> Result<(ServiceName, String), String> {
    let (name, endpoint) = value
        .split_once('=')
        .ok_or_else(|| format!("expected SERVICE=HOST:PORT, got {value:?}"))?;
    let service = ServiceName::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = ServiceName::ALL.iter().map(|service| service.as_str()).collect();
        format!("unknown service {name:?}; expected one of {}", names.join(", "))
    })?;
    Ok((service, endpoint.to_owned()))
}
