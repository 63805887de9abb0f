//! Passkey commands: `passkey list | rename | remove`. Adding a passkey and signing in with one
//! are WebAuthn ceremonies, which need a browser and its authenticator: the web app does them.

use caremesh_sdk::SdkError;
use caremesh_sdk::audit::time_of;
use caremesh_sdk::proto::auth::v1::Passkey;
use clap::Subcommand;
use serde_json::json;

use crate::Ctx;

#[derive(Subcommand)]
pub enum PasskeyCommand {
    /// Your passkeys, oldest first, and whether your role requires one.
    List,
    /// Give one of your passkeys a new name (1 to 64 characters).
    Rename { passkey_id: String, name: String },
    /// Remove one of your passkeys (needs a session with a second factor): it can no longer sign in.
    Remove { passkey_id: String },
}

fn passkey_json(passkey: &Passkey) -> serde_json::Value {
    json!({
        "passkey_id": passkey.passkey_id,
        "name": passkey.name,
        "credential_id": passkey.credential_id,
        "create_time": time_of(passkey.create_time.as_ref()),
        "last_use_time": time_of(passkey.last_use_time.as_ref()),
        "sign_count": passkey.sign_count,
        "backup_eligible": passkey.backup_eligible,
        "backup_state": passkey.backup_state,
    })
}

fn passkey_line(passkey: &Passkey) -> String {
    let date = |time: Option<&prost_types::Timestamp>| {
        time_of(time).map_or_else(|| "never".to_owned(), |time| time.format("%Y-%m-%d %H:%M").to_string())
    };
    format!(
        "{}  {:<24} added {}, last used {}{}",
        passkey.passkey_id,
        passkey.name,
        date(passkey.create_time.as_ref()),
        date(passkey.last_use_time.as_ref()),
        if passkey.backup_state { " (synced)" } else { "" }
    )
}

pub async fn run(ctx: &Ctx, command: PasskeyCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    match command {
        PasskeyCommand::List => {
            let listed = ctx.client.list_passkeys(&session).await?;
            ctx.print(
                json!({
                    "passkeys": listed.passkeys.iter().map(passkey_json).collect::<Vec<_>>(),
                    "passkey_required": listed.passkey_required,
                }),
                || {
                    let mut lines: Vec<String> = listed.passkeys.iter().map(passkey_line).collect();
                    if lines.is_empty() {
                        lines.push("no passkeys: add one in the web app (Passkeys), in a browser".to_owned());
                    }
                    if listed.passkey_required {
                        lines.push(
                            "your role requires a passkey: once you have one, sign in with it (or a recovery code) \
                             instead of TOTP"
                                .to_owned(),
                        );
                    }
                    lines.join("\n")
                },
            );
        }
        PasskeyCommand::Rename { passkey_id, name } => {
            let passkey = ctx.client.rename_passkey(&session, &passkey_id, &name).await?;
            ctx.print(passkey_json(&passkey), || passkey_line(&passkey));
        }
        PasskeyCommand::Remove { passkey_id } => {
            ctx.client.remove_passkey(&session, &passkey_id).await?;
            ctx.print(json!({ "passkey_id": passkey_id, "removed": true }), || {
                format!("removed passkey {passkey_id}: it can no longer sign in")
            });
        }
    }
    Ok(())
}
