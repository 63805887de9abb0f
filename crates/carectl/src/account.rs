//! Account commands: register, login, logout, whoami, MFA and recovery codes.

use std::io::BufRead;

use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{self, Code, LoginStep, Session};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::Ctx;

#[derive(Args)]
pub struct RegisterArgs {
    username: String,
    /// patient, doctor or nurse.
    #[arg(long, default_value = "patient")]
    role: String,
    #[arg(long, default_value = "")]
    display_name: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Args)]
pub struct LoginArgs {
    username: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// The current TOTP code (for scripts; otherwise you are asked when needed).
    #[arg(long, conflicts_with = "recovery_code")]
    totp: Option<String>,
    /// A recovery code instead of a TOTP code.
    #[arg(long)]
    recovery_code: Option<String>,
}

#[derive(Subcommand)]
pub enum MfaCommand {
    /// Start TOTP enrollment: shows the otpauth URI, the secret and a QR code to scan.
    Enroll {
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
    /// Finish enrollment with the code your app shows; prints your recovery codes.
    Confirm { code: String },
}

fn read_password(from_stdin: bool, prompt: &str) -> Result<String, SdkError> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| SdkError::Local(format!("cannot read the password from standard input: {error}")))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    rpassword::prompt_password(prompt).map_err(|error| SdkError::Local(format!("cannot read the password: {error}")))
}

fn session_json(session: &Session) -> serde_json::Value {
    json!({
        "user_id": session.user_id,
        "role": session.role,
        "session_id": session.session_id,
        "aal": session.aal,
        "access_expires_at": session.access_expires_at,
        "session_expires_at": session.session_expires_at,
    })
}

pub async fn register(ctx: &Ctx, args: RegisterArgs) -> Result<(), SdkError> {
    let role = auth::parse_role(&args.role)
        .ok_or_else(|| SdkError::Local(format!("unknown role {:?}: use patient, doctor or nurse", args.role)))?;
    let password = read_password(
        args.password_stdin,
        "Choose a password (12+ characters; a few words work well): ",
    )?;
    let user = ctx
        .client
        .register(&args.username, &password, role, &args.display_name)
        .await?;
    let pending = user.status() == caremesh_sdk::proto::auth::v1::UserStatus::Pending;
    ctx.print(
        json!({"user_id": user.user_id, "username": user.username, "status": user.status().as_str_name()}),
        || {
            let mut text = format!("registered {} ({})", user.username, user.user_id);
            if pending {
                text.push_str(
                    "\nyour account waits for an administrator's approval; you can sign in and set up MFA meanwhile",
                );
            }
            text
        },
    );
    Ok(())
}

pub async fn login(ctx: &Ctx, args: LoginArgs) -> Result<(), SdkError> {
    let password = read_password(args.password_stdin, "Password: ")?;
    let session = match ctx.client.login(&args.username, &password).await? {
        LoginStep::Done(session) => session,
        LoginStep::SecondFactor { challenge } => {
            let code = match (args.totp, args.recovery_code) {
                (Some(code), _) => Code::Totp(code),
                (None, Some(code)) => Code::Recovery(code),
                (None, None) => {
                    let entered = rpassword::prompt_password("TOTP code (or a recovery code): ")
                        .map_err(|error| SdkError::Local(format!("cannot read the code: {error}")))?;
                    let entered = entered.trim().to_owned();
                    if entered.len() == 6 && entered.bytes().all(|byte| byte.is_ascii_digit()) {
                        Code::Totp(entered)
                    } else {
                        Code::Recovery(entered)
                    }
                }
            };
            ctx.client.complete_login(&challenge, code).await?
        }
    };
    ctx.store.save(&ctx.profile, &session)?;
    ctx.print(session_json(&session), || {
        let mut text = format!(
            "signed in as {} ({}), assurance level AAL{}",
            args.username, session.role, session.aal
        );
        if session.aal < 2 {
            text.push_str("\nhealth data needs MFA: run `carectl mfa enroll`");
        }
        text
    });
    Ok(())
}

pub async fn logout(ctx: &Ctx) -> Result<(), SdkError> {
    if let Some(session) = ctx.store.load(&ctx.profile)? {
        ctx.client.logout(&session).await?;
    }
    ctx.store.remove(&ctx.profile)?;
    ctx.print(json!({"signed_out": true}), || "signed out".to_owned());
    Ok(())
}

pub async fn whoami(ctx: &Ctx) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let me = ctx.client.whoami(&session).await?;
    let user = me.user.clone().unwrap_or_default();
    ctx.print(
        json!({
            "user_id": user.user_id,
            "username": user.username,
            "display_name": user.display_name,
            "role": user.role().as_str_name(),
            "status": user.status().as_str_name(),
            "attributes": me.token_attributes,
            "aal": me.aal().as_str_name(),
            "mfa_enrolled": user.mfa_enrolled,
            "session_id": me.session_id,
            "recovery_codes_remaining": me.recovery_codes_remaining,
        }),
        || {
            format!(
                "{} ({}), {} {}\nattributes: {}\nsession {} at {}; MFA {}; {} recovery codes left",
                user.username,
                user.user_id,
                user.role().as_str_name(),
                user.status().as_str_name(),
                me.token_attributes.join(", "),
                me.session_id,
                me.aal().as_str_name(),
                if user.mfa_enrolled { "enrolled" } else { "not enrolled" },
                me.recovery_codes_remaining
            )
        },
    );
    Ok(())
}

pub async fn mfa(ctx: &Ctx, command: MfaCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    match command {
        MfaCommand::Enroll { no_qr } => {
            let enrollment = ctx.client.enroll_totp(&session).await?;
            ctx.print(
                json!({"otpauth_uri": enrollment.otpauth_uri, "secret": enrollment.secret, "expires_at": enrollment.expires_at}),
                || {
                    let mut text = String::new();
                    if !no_qr && let Ok(code) = qrcode::QrCode::new(enrollment.otpauth_uri.as_bytes()) {
                        text.push_str(
                            &code
                                .render::<qrcode::render::unicode::Dense1x2>()
                                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                                .build(),
                        );
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "scan the QR code, or add this to your authenticator app:\n  {}\nsecret: {}\nthen run `carectl mfa confirm <code>`",
                        enrollment.otpauth_uri, enrollment.secret
                    ));
                    text
                },
            );
        }
        MfaCommand::Confirm { code } => {
            let (codes, upgraded) = ctx.client.confirm_totp(&session, &code).await?;
            if let Some(upgraded) = &upgraded {
                ctx.store.save(&ctx.profile, upgraded)?;
            }
            ctx.print(
                json!({"recovery_codes": codes, "aal": upgraded.as_ref().map_or(session.aal, |s| s.aal)}),
                || {
                    let mut text = format!(
                        "MFA enrolled. Your recovery codes (each works once; keep them safe):\n  {}",
                        codes.join("\n  ")
                    );
                    if upgraded.is_none() {
                        text.push_str(
                            "\nyour account is pending approval: sign in again once an administrator approves it",
                        );
                    }
                    text
                },
            );
        }
    }
    Ok(())
}

pub async fn recovery_codes(ctx: &Ctx) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let codes = ctx.client.regenerate_recovery_codes(&session).await?;
    ctx.print(json!({"recovery_codes": codes}), || {
        format!(
            "new recovery codes (the old ones no longer work):\n  {}",
            codes.join("\n  ")
        )
    });
    Ok(())
}
