//! Admin commands: pending approvals, attributes, disabling, unlocking, ending sessions, and which
//! roles must use passkeys.

use caremesh_sdk::SdkError;
use caremesh_sdk::auth::{self};
use caremesh_sdk::proto::auth::v1::{Role, RolePolicy, User};
use clap::Subcommand;
use serde_json::json;

use crate::Ctx;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Accounts waiting for approval.
    Pending,
    /// Approve a doctor or nurse, assigning attributes (e.g. --attr dept:cardiology --attr org:st-mary).
    Approve {
        username: String,
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// Replace a user's attributes.
    Attrs {
        username: String,
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// Disable an account (ends its sessions).
    Disable { username: String },
    /// Enable a disabled account.
    Enable { username: String },
    /// Unlock an account locked after failed logins.
    Unlock { username: String },
    /// End every session of a user.
    Revoke { username: String },
    /// Create an account of any role (admins and auditors are created this way).
    Create {
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        display_name: String,
        #[arg(long = "attr")]
        attributes: Vec<String>,
    },
    /// Show which roles must use a passkey as their second factor.
    Policies,
    /// Require passkeys of a role (its users then sign in with a passkey or a recovery code), or
    /// stop requiring them.
    Policy {
        role: String,
        #[arg(long, value_parser = ["required", "optional"])]
        passkeys: String,
    },
}

fn role_arg(role: &str) -> Result<Role, SdkError> {
    auth::parse_role(role).ok_or_else(|| {
        SdkError::Local(format!(
            "unknown role {role:?}: use patient, doctor, nurse, admin or auditor"
        ))
    })
}

fn policy_json(policy: &RolePolicy) -> serde_json::Value {
    json!({
        "role": policy.role().as_str_name(),
        "passkey_required": policy.passkey_required,
    })
}

fn policy_line(policy: &RolePolicy) -> String {
    format!(
        "{:<10} passkeys {}",
        policy.role().as_str_name().trim_start_matches("ROLE_").to_lowercase(),
        if policy.passkey_required {
            "required"
        } else {
            "optional"
        }
    )
}

fn user_json(user: &User) -> serde_json::Value {
    json!({
        "user_id": user.user_id,
        "username": user.username,
        "role": user.role().as_str_name(),
        "status": user.status().as_str_name(),
        "attributes": user.attributes,
        "locked": user.locked,
        "mfa_enrolled": user.mfa_enrolled,
        "etag": user.etag,
    })
}

fn user_line(user: &User) -> String {
    format!(
        "{:<24} {:<12} {:<20} {}{}",
        user.username,
        user.role().as_str_name().trim_start_matches("ROLE_").to_lowercase(),
        user.status()
            .as_str_name()
            .trim_start_matches("USER_STATUS_")
            .to_lowercase(),
        user.attributes.join(","),
        if user.locked { "  (locked)" } else { "" }
    )
}

pub async fn run(ctx: &Ctx, command: AdminCommand) -> Result<(), SdkError> {
    let session = ctx.session().await?;
    let client = &ctx.client;
    let user = match command {
        AdminCommand::Pending => {
            let users = client.admin_pending(&session).await?;
            ctx.print(json!(users.iter().map(user_json).collect::<Vec<_>>()), || {
                if users.is_empty() {
                    "nobody is waiting for approval".to_owned()
                } else {
                    users.iter().map(user_line).collect::<Vec<_>>().join("\n")
                }
            });
            return Ok(());
        }
        AdminCommand::Create {
            username,
            role,
            display_name,
            attributes,
        } => {
            let role = role_arg(&role)?;
            let (user, password) = client
                .admin_create_user(&session, &username, role, &display_name, &attributes)
                .await?;
            let mut value = user_json(&user);
            if let Some(object) = value.as_object_mut() {
                object.insert("initial_password".to_owned(), json!(password));
            }
            ctx.print(value, || {
                format!(
                    "{}\ninitial password (hand it over safely): {password}",
                    user_line(&user)
                )
            });
            return Ok(());
        }
        AdminCommand::Policies => {
            let policies = client.admin_role_policies(&session).await?;
            ctx.print(json!(policies.iter().map(policy_json).collect::<Vec<_>>()), || {
                policies.iter().map(policy_line).collect::<Vec<_>>().join("\n")
            });
            return Ok(());
        }
        AdminCommand::Policy { role, passkeys } => {
            let role = role_arg(&role)?;
            let policy = client
                .admin_set_role_policy(&session, role, passkeys == "required")
                .await?;
            ctx.print(policy_json(&policy), || policy_line(&policy));
            return Ok(());
        }
        AdminCommand::Revoke { username } => {
            let revoked = client.admin_revoke(&session, &username).await?;
            ctx.print(json!({"revoked_sessions": revoked}), || {
                format!("ended {revoked} session(s) of {username}")
            });
            return Ok(());
        }
        AdminCommand::Approve { username, attributes } => {
            client.admin_approve(&session, &username, &attributes).await?
        }
        AdminCommand::Attrs { username, attributes } => {
            client.admin_set_attributes(&session, &username, &attributes).await?
        }
        AdminCommand::Disable { username } => client.admin_set_disabled(&session, &username, true).await?,
        AdminCommand::Enable { username } => client.admin_set_disabled(&session, &username, false).await?,
        AdminCommand::Unlock { username } => client.admin_unlock(&session, &username).await?,
    };
    ctx.print(user_json(&user), || user_line(&user));
    Ok(())
}
